"""The evaluate stage: metrics, the validation pass, scoring a trained checkpoint, and ``radseg evaluate``
(lesions as objects, summaries with bootstrap intervals, the report).

Public names are re-exported lazily by :mod:`radseg.pipeline`; import modules directly here.
"""
