"""Pieces several stages share: the checkpoint format and the distributed (DDP) helpers.

Public names are re-exported lazily by :mod:`radseg.pipeline`; import modules directly here.
"""
