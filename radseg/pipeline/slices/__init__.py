"""The 2D slice branch: axial slices from the same data layer, slice classifiers, the liver locator."""
