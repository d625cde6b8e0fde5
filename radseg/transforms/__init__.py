"""MONAI dictionary-transform chains: load, orient, resample, normalise, crop, augment."""
