"""radseg: train and run 3D segmentation and 2D slice classification on CT/MRI datasets."""

__version__ = "0.1.0"

__all__ = ["__version__"]
