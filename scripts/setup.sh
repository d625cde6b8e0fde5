#!/usr/bin/env bash
# Create .venv with a pinned CPU torch first (a bare "torch" would pull a multi-GB CUDA build),
# then install radseg itself in editable mode with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${RADSEG_TORCH_VERSION:-2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
    python -m pip install -q "torch==${TORCH_VERSION}"
fi
python -m pip install -q -e ".[test]"
