"""The predict stage: the one sliding-window predictor (used by validation and by inference).

Public names are re-exported lazily by :mod:`radseg.pipeline`; import modules directly here.
"""
