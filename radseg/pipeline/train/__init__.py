"""The train stage: fit, the epoch loop, losses, schedule, the run folder and its logs, and the demo.

Public names are re-exported lazily by :mod:`radseg.pipeline`; import modules directly here.
"""
