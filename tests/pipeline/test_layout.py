"""The pipeline's stages import one way only: core < data < plan < predict < export < evaluate < review < train <
slices.

The 2D slice branch (``slices``) reuses the 3D branch's engine (train's loop, schedule, run folder and
log), so it sits after train; nothing imports it but the CLI and the demo, which runs every stage.
"""

import ast
import importlib
from pathlib import Path

import pytest

import radseg.pipeline

PIPELINE = Path(radseg.pipeline.__file__).parent
#: each stage may import itself and the stages listed before it
ORDER = ["core", "data", "plan", "predict", "export", "evaluate", "review", "train", "slices"]
#: modules allowed to import a higher stage: the demo runs every stage, the slice branch included; predict's
#: onnxruntime/OpenVINO runtimes run the ONNX file of export's one exporter (imported when such a runtime is built)
EXCEPTIONS = {"train/demo.py": {"slices"}, "predict/runtime_backends.py": {"export"}}


def _imported_stages(path: Path) -> set[str]:
    stages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["radseg", "pipeline"] and len(parts) > 2:
                stages.add(parts[2])
    return stages


@pytest.mark.parametrize("stage", ORDER)
def test_no_stage_imports_a_higher_one(stage):
    allowed = set(ORDER[: ORDER.index(stage) + 1])
    for path in sorted((PIPELINE / stage).glob("*.py")):
        upward = _imported_stages(path) - allowed - EXCEPTIONS.get(f"{stage}/{path.name}", set())
        assert not upward, f"{path.relative_to(PIPELINE)} imports the higher stage(s) {sorted(upward)}"


def test_only_the_cli_and_the_demo_import_the_slice_branch():
    package = PIPELINE.parent
    importers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                       if "slices" in _imported_stages(p) and PIPELINE / "slices" not in p.parents)
    assert set(importers) <= {"cli.py", "pipeline/train/demo.py"}, importers


def test_every_module_belongs_to_a_stage():
    loose = [p.name for p in PIPELINE.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside a stage folder: {loose}"
    assert sorted(p.name for p in PIPELINE.iterdir() if p.is_dir() and not p.name.startswith("__")) == sorted(ORDER)


def test_public_names_resolve_from_radseg_pipeline():
    for name in radseg.pipeline.__all__:
        assert getattr(radseg.pipeline, name) is not None, name
    assert importlib.import_module("radseg.pipeline.evaluate.metrics").dice_per_class is radseg.pipeline.dice_per_class
