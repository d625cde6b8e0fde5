"""The evaluate stage: metrics, the validation pass, and scoring a trained checkpoint.

Public names are re-exported lazily by :mod:`radseg.pipeline`; import modules directly here.
"""
