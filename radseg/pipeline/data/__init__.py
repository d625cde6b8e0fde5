"""The data stage: dataset discovery, case-level splits, check-data, the phantom, and the patch caches.

Public names are re-exported lazily by :mod:`radseg.pipeline`; import modules directly here.
"""
