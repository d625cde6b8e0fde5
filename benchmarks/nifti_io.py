"""How fast can radseg read and write .nii.gz? SimpleITK and nibabel against the gzip accelerators.

One run, one table: seconds and file size for each method, on a synthetic 512x512xN int16 CT (air,
a noisy body, bone) and a uint8 label map of the same size. Every read ends in a SimpleITK image
and every write starts from one, because that is what ``radseg predict`` holds; conversions count.

Methods (write, then read back):
  sitk             SimpleITK ``WriteImage(useCompression=True)`` at its default level / ``ReadImage``
  sitk L1          the same with ``compressionLevel=1``
  nibabel          nibabel's own gzip (zlib, level 1, its default) / nibabel reading through gzip
  nibabel+igzip    reading through indexed_gzip (nibabel uses it whenever it is installed)
  isal L1/L2       the NIfTI header and SimpleITK's voxel buffer streamed through python-isal's igzip (ISA-L) / read through it
  isal 2 thr       isal's threaded writer with one thread per core
  zlib-ng L1/L2    the same streamed through zlib-ng (``zlib_ng.gzip_ng``) / read through it
  zlib-ng 2 thr    zlib-ng's threaded writer
  radseg           ``radseg.transforms.nifti_gzip.write_nifti_gz`` (isal, level 1, one thread per
                   core, atomic: fsync and rename) / ``SimpleITK.ReadImage``
  .nii (none)      uncompressed, the floor set by the disk and the copy

Each read method reads the file its own writer made. ``file MB`` is that file's size.

    python benchmarks/nifti_io.py               # 512x512x800, 3 rounds, about 8 minutes on 2 cores
    python benchmarks/nifti_io.py --slices 141  # a shorter scan
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import isal.igzip  # noqa: E402
import isal.igzip_threaded  # noqa: E402
import nibabel._compression as nib_compression  # noqa: E402
import zlib_ng.gzip_ng  # noqa: E402
import zlib_ng.gzip_ng_threaded  # noqa: E402

from radseg.transforms import nifti_gzip  # noqa: E402
from radseg.transforms.io import sitk_affine_ras  # noqa: E402

THREADS = os.cpu_count() or 1


def synthetic_ct(shape: tuple[int, int, int], seed: int = 0) -> sitk.Image:
    """int16 CT in HU: air around an elliptic body of soft tissue with a spine, noise 12 HU."""
    nx, ny, nz = shape
    rng = np.random.default_rng(seed)
    volume = np.empty((nz, ny, nx), dtype=np.int16)
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    for z in range(nz):
        a = 0.40 * nx * (1 + 0.1 * np.sin(z / 60))
        body = ((x - nx / 2) / a) ** 2 + ((y - ny / 2) / (0.3 * ny)) ** 2 <= 1
        spine = (x - nx / 2) ** 2 + (y - 0.7 * ny) ** 2 <= (0.04 * nx) ** 2
        base = np.where(body, 40.0, -1000.0) + np.where(spine, 660.0, 0.0)
        volume[z] = np.clip(base + rng.normal(0, 12, size=(ny, nx)), -1024, 3071)
    return _with_geometry(sitk.GetImageFromArray(volume))


def synthetic_mask(shape: tuple[int, int, int]) -> sitk.Image:
    """uint8 label map: a liver-like ellipsoid (1) with a tumour (2) and a kidney (3)."""
    nx, ny, nz = shape
    z, y, x = np.ogrid[0:nz, 0:ny, 0:nx]
    mask = np.zeros((nz, ny, nx), dtype=np.uint8)
    liver = ((x - 0.35 * nx) / (0.15 * nx)) ** 2 + ((y - 0.45 * ny) / (0.12 * ny)) ** 2 + (
        (z - 0.5 * nz) / (0.15 * nz)) ** 2 <= 1
    mask[liver] = 1
    mask[((x - 0.33 * nx) ** 2 + (y - 0.45 * ny) ** 2) / (0.03 * nx) ** 2 + ((z - 0.5 * nz) / (0.03 * nz)) ** 2 <= 1] = 2
    mask[((x - 0.65 * nx) / (0.05 * nx)) ** 2 + ((y - 0.6 * ny) / (0.07 * ny)) ** 2 + (
        (z - 0.4 * nz) / (0.07 * nz)) ** 2 <= 1] = 3
    return _with_geometry(sitk.GetImageFromArray(mask))


def _with_geometry(image: sitk.Image) -> sitk.Image:
    image.SetSpacing((0.8, 0.8, 1.0))
    image.SetOrigin((-204.0, -180.0, -400.0))
    return image


def _to_nibabel(image: sitk.Image) -> nib.Nifti1Image:
    array = sitk.GetArrayViewFromImage(image).T  # (x, y, z), Fortran order: no copy
    nifti = nib.Nifti1Image(array, sitk_affine_ras(image))
    nifti.set_qform(nifti.affine, code=1)
    nifti.set_sform(nifti.affine, code=1)
    return nifti


def _from_nibabel(nifti: nib.Nifti1Image) -> sitk.Image:
    image = sitk.GetImageFromArray(np.asanyarray(nifti.dataobj).T)
    affine = nifti.affine.copy()
    affine[:2] *= -1  # RAS -> LPS
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    image.SetDirection((affine[:3, :3] / spacing).ravel().tolist())
    return image


def _stream_write(opener, **kwargs):
    """The NIfTI header, then SimpleITK's buffer as it is (x fastest), through ``opener``."""
    def write(image: sitk.Image, path: Path) -> None:
        with opener(str(path), "wb", **kwargs) as stream:
            stream.write(nifti_gzip.nifti_header(image).binaryblock + b"\x00" * 4)
            stream.write(memoryview(sitk.GetArrayViewFromImage(image)).cast("B"))
    return write


def _stream_read(opener):
    """Header and voxels inflated through ``opener`` straight into one array (no extra copies)."""
    def read(path: Path) -> sitk.Image:
        with opener(str(path), "rb") as stream:
            header = nib.Nifti1Header.from_fileobj(stream)
            stream.read(int(header.get_data_offset()) - stream.tell())
            voxels = np.empty(header.get_data_shape()[::-1], dtype=header.get_data_dtype())
            stream.readinto(memoryview(voxels).cast("B"))
        nifti = nib.Nifti1Image(voxels.T, header.get_best_affine())
        return _from_nibabel(nifti)
    return read


def _nibabel_read(indexed: bool):
    def read(path: Path) -> sitk.Image:
        saved = nib_compression.HAVE_INDEXED_GZIP
        nib_compression.HAVE_INDEXED_GZIP = indexed
        try:
            return _from_nibabel(nib.load(str(path)))
        finally:
            nib_compression.HAVE_INDEXED_GZIP = saved
    return read


def _nibabel_write(image: sitk.Image, path: Path) -> None:
    _to_nibabel(image).to_filename(str(path))


def _sitk_write(level: int, compress: bool = True):
    return lambda image, path: sitk.WriteImage(image, str(path), compress, level)


def _sitk_read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


#: name -> (file suffix, writer, reader)
METHODS = {
    "sitk (default level)": (".nii.gz", _sitk_write(-1), _sitk_read),
    "sitk L1": (".nii.gz", _sitk_write(1), _sitk_read),
    "nibabel gzip L1": (".nii.gz", _nibabel_write, _nibabel_read(indexed=False)),
    "nibabel+indexed_gzip": (".nii.gz", _nibabel_write, _nibabel_read(indexed=True)),
    "isal L1": (".nii.gz", _stream_write(isal.igzip.open, compresslevel=1), _stream_read(isal.igzip.open)),
    "isal L2": (".nii.gz", _stream_write(isal.igzip.open, compresslevel=2), _stream_read(isal.igzip.open)),
    f"isal L1 {THREADS} thr": (".nii.gz", _stream_write(isal.igzip_threaded.open, compresslevel=1,
                                                       threads=THREADS), _stream_read(isal.igzip.open)),
    "zlib-ng L1": (".nii.gz", _stream_write(zlib_ng.gzip_ng.open, compresslevel=1),
                   _stream_read(zlib_ng.gzip_ng.open)),
    "zlib-ng L2": (".nii.gz", _stream_write(zlib_ng.gzip_ng.open, compresslevel=2),
                   _stream_read(zlib_ng.gzip_ng.open)),
    f"zlib-ng L1 {THREADS} thr": (".nii.gz", _stream_write(zlib_ng.gzip_ng_threaded.open, compresslevel=1,
                                                          threads=THREADS), _stream_read(zlib_ng.gzip_ng.open)),
    "radseg write_nifti_gz": (".nii.gz", nifti_gzip.write_nifti_gz, _sitk_read),
    ".nii uncompressed (sitk)": (".nii", _sitk_write(-1, compress=False), _sitk_read),
}


def _timed(action, *args):
    gc.collect()
    start = time.perf_counter()
    result = action(*args)
    return time.perf_counter() - start, result


def measure(name: str, image: sitk.Image, folder: Path) -> tuple[float, float, float]:
    """(write s, read s, file MB) of one method on one image; checks the round trip is exact."""
    suffix, write, read = METHODS[name]
    path = folder / f"{abs(hash(name))}{suffix}"
    write_s, _ = _timed(write, image, path)
    size_mb = path.stat().st_size / 1e6
    read_s, back = _timed(read, path)
    same = np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    if not same or not np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4):
        raise SystemExit(f"{name}: the image read back differs from the one written")
    path.unlink()
    return write_s, read_s, size_mb


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=800, help="N of the 512x512xN volumes")
    parser.add_argument("--size", type=int, default=512, help="in-plane size")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds over all methods; each cell is its fastest round")
    parser.add_argument("--folder", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args(argv)
    shape = (args.size, args.size, args.slices)
    images = {"CT int16": synthetic_ct(shape), "mask uint8": synthetic_mask(shape)}
    raw = {k: v.GetNumberOfPixels() * v.GetSizeOfPixelComponent() / 1e6 for k, v in images.items()}
    print(f"{args.size}x{args.size}x{args.slices}: CT {raw['CT int16']:.0f} MB, mask "
          f"{raw['mask uint8']:.0f} MB raw; {THREADS} CPU cores; SimpleITK {sitk.Version.VersionString()}, "
          f"nibabel {nib.__version__}; best of {args.repeats} rounds; load average at start "
          f"{os.getloadavg()[0]:.1f}")
    best: dict[tuple[str, str], np.ndarray] = {}
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        for _ in range(args.repeats):  # rounds interleave the methods, so load spikes hit all alike
            for name in METHODS:
                for key, image in images.items():
                    cell = np.asarray(measure(name, image, Path(folder)))
                    best[name, key] = np.minimum(best.get((name, key), cell), cell)
    print(f"{'':<26}" + "".join(f"{k:^36}" for k in images))
    header = f"{'method':<26}" + "".join(f"{c:>12}" for _ in images for c in ("write s", "read s", "file MB"))
    print(header)
    print("-" * len(header))
    for name in METHODS:
        print(f"{name:<26}" + "".join(f"{best[name, k][0]:12.2f}{best[name, k][1]:12.2f}{best[name, k][2]:12.2f}"
                                      for k in images))
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
