"""Checks that a scan file is complete, where the reader itself does not check.

SimpleITK (ITK 5.4) reads a truncated NIfTI file, plain or gzipped, without any error and fills
the missing voxels with zeros; NRRD and MetaImage readers do refuse truncated files. A scan that
is half zeros would silently poison a cache or a prediction, so NIfTI files are checked here.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from radseg.errors import DataError

_CHUNK = 1 << 22


def check_nifti_complete(path: Path) -> None:
    """Raise if a .nii/.nii.gz file holds fewer voxel bytes than its header declares.

    Cheap: the header, then the file size (.nii) or the gzip trailer (.nii.gz); a gzip file is
    decompressed in full only when its trailer disagrees (a truncated or multi-member stream).

    Args:
        path: any file; only names ending in .nii or .nii.gz are checked.

    Raises:
        DataError: the file is truncated.
    """
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        image = nib.load(str(path))  # reads the header only
        expected = int(image.dataobj.offset) + int(np.prod(image.shape)) * image.get_data_dtype().itemsize
    except Exception:  # noqa: BLE001 - not a NIfTI nibabel understands: SimpleITK reports it
        return
    actual = path.stat().st_size if name.endswith(".nii") else _gzip_size(path, expected)
    if actual < expected:
        raise DataError(
            f"image {path} is truncated: its header declares {expected} bytes of voxels and header "
            f"but the file holds {actual}; expected a complete NIfTI file; fix: copy, re-export or "
            "re-download it")


def _gzip_size(path: Path, expected: int) -> int:
    """Uncompressed size of a gzip file (trusting its trailer when it agrees with ``expected``)."""
    with open(path, "rb") as stream:
        stream.seek(-4, 2)
        trailer = struct.unpack("<I", stream.read(4))[0]
    if trailer == expected % 2**32:
        return expected
    total, decompressor = 0, zlib.decompressobj(zlib.MAX_WBITS | 32)
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                while chunk:  # a file may hold several gzip members, one after another
                    total += len(decompressor.decompress(chunk))
                    chunk = decompressor.unused_data if decompressor.eof else b""
                    if decompressor.eof:
                        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)
    except zlib.error:
        pass  # corrupt from here on: ``total`` is what it holds
    return total
