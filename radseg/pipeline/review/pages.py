"""The review folder's files: the static pages (package data), the index's data and one script per case.

Pages opened from disk (``file://``) cannot ``fetch()`` files beside them, so every piece of data is
a small script that sets a global: ``index_data.js`` sets ``RADSEG_INDEX``, ``cases/<name>.js``
sets ``RADSEG_CASE``. Every file is written atomically.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from radseg.atomic import write_text_atomic

#: the static files copied from the package into every review folder
ASSETS = ("index.html", "case.html", "review.css", "order.js", "index.js", "volume.js", "draw.js", "viewer.js")
#: the file that marks a folder as a review (``--overwrite`` replaces only such folders)
INDEX_DATA = "index_data.js"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def copy_assets(folder: Path) -> None:
    """Copy the pages, style and scripts into ``folder``."""
    package = resources.files("radseg.pipeline.review") / "assets"
    for name in ASSETS:
        write_text_atomic(folder / name, (package / name).read_text(encoding="utf-8"))


def page_name(case_id: str, taken: set[str]) -> str:
    """A file-safe, unique name for a case's script (``cases/<name>.js``) and page (``case.html#<name>``)."""
    name = _UNSAFE.sub("_", case_id) or "case"
    base, number = name, 1
    while name in taken:
        number += 1
        name = f"{base}_{number}"
    taken.add(name)
    return name


def write_case(folder: Path, name: str, payload: dict) -> Path:
    """Write ``cases/<name>.js``."""
    (folder / "cases").mkdir(exist_ok=True)
    return write_text_atomic(folder / "cases" / f"{name}.js", _script("RADSEG_CASE", payload))


def write_index(folder: Path, index: dict) -> Path:
    """Write ``index_data.js``: the rows, label map and notes the index page shows."""
    return write_text_atomic(folder / INDEX_DATA, _script("RADSEG_INDEX", index))


def _script(name: str, value: dict) -> str:
    # strict JSON (NaN refused): undefined metrics are None, which the page shows as a dash
    return f"window.{name} = {json.dumps(value, allow_nan=False, separators=(',', ':'))};\n"
