"""Pieces several stages share: the checkpoint format, the distributed (DDP) helpers, quick-look pictures.

Public names are re-exported lazily by :mod:`radseg.pipeline`; import modules directly here.
"""
