"""``radseg export``: trained runs as MONAI bundles, TorchScript or ONNX networks."""

from radseg.pipeline.export.export import FORMATS, ExportResult, export_model

__all__ = ["FORMATS", "ExportResult", "export_model"]
