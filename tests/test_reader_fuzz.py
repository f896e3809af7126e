"""Readers on randomly corrupted real files: only a clear AmosegError, never a crash or a hang.

Seeds are real AMOS / TotalSegmentator files (a crop of the real amos_0013 label keeps its
real header fields: LAS affine, uint16, scaling). Corruption = byte flips (biased to the
header, where parsers break), truncation, and inserted junk.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amoseg.data.nifti import image_array, label_array, load_nifti
from amoseg.errors import AmosegError

FUZZ = settings(
    max_examples=150,
    deadline=10_000,  # generous: CI machines are shared; a true hang hits pytest-timeout
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

pytestmark = pytest.mark.timeout(120)


@st.composite
def corruption(draw, header_bytes: int = 400):
    """A recipe (flips, cut, insert) applied by `corrupt`; positions are fractions or offsets."""
    n_flips = draw(st.integers(0, 8))
    flips = [
        (
            draw(
                st.one_of(
                    st.integers(0, header_bytes - 1),  # header: where parsers break
                    st.floats(0, 1).map(lambda f: ("frac", f)),  # anywhere
                )
            ),
            draw(st.integers(0, 255)),
        )
        for _ in range(n_flips)
    ]
    cut = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    insert = draw(
        st.one_of(st.none(), st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=64)))
    )
    return flips, cut, insert


def corrupt(data: bytes, recipe) -> bytes:
    flips, cut, insert = recipe
    buf = bytearray(data)
    for where, value in flips:
        pos = int(where[1] * (len(buf) - 1)) if isinstance(where, tuple) else where
        if 0 <= pos < len(buf):
            buf[pos] = value
    if insert is not None:
        pos = int(insert[0] * len(buf))
        buf[pos:pos] = insert[1]
    if cut is not None:
        buf = buf[: int(cut * len(buf))]
    return bytes(buf)


def read_all(path: Path) -> None:
    """Everything a command does with a scan or label file before using its voxels."""
    img = load_nifti(path, "label")
    image_array(img, path)
    label_array(img, path)


@pytest.fixture(scope="module")
def seeds(realdata: Path, tmp_path_factory) -> dict[str, bytes]:
    """Small real files: the real gzip label, and a crop with the real header, .nii and .gz."""
    out = tmp_path_factory.mktemp("seeds")
    real_gz = realdata / "amos_mini" / "labelsVa" / "amos_0013.nii.gz"
    real = nib.load(str(real_gz))
    crop = np.asarray(real.dataobj)[200:264, 200:264, 4:8]
    header = real.header.copy()
    cropped = nib.Nifti1Image(crop, real.affine, header)
    nib.save(cropped, str(out / "crop.nii"))
    nib.save(cropped, str(out / "crop.nii.gz"))
    return {
        "real.nii.gz": real_gz.read_bytes(),
        "crop.nii": (out / "crop.nii").read_bytes(),
        "crop.nii.gz": (out / "crop.nii.gz").read_bytes(),
    }


def test_seeds_read_cleanly(seeds, tmp_path):
    """The uncorrupted seeds load (otherwise the fuzz below proves nothing)."""
    for name, data in seeds.items():
        path = tmp_path / name
        path.write_bytes(data)
        read_all(path)


def _check_nifti(seeds, tmp_path, name, recipe):
    path = tmp_path / name
    path.write_bytes(corrupt(seeds[name], recipe))
    try:
        read_all(path)
    except AmosegError as exc:
        line = exc.line()
        assert "\n" not in line and str(path) in line


@FUZZ
@given(recipe=corruption())
def test_corrupt_plain_nifti_gives_clear_error(seeds, tmp_path, recipe):
    _check_nifti(seeds, tmp_path, "crop.nii", recipe)


@FUZZ
@given(recipe=corruption(header_bytes=64))
def test_corrupt_gzip_nifti_gives_clear_error(seeds, tmp_path, recipe):
    _check_nifti(seeds, tmp_path, "crop.nii.gz", recipe)


@settings(FUZZ, max_examples=40)
@given(recipe=corruption(header_bytes=64))
def test_corrupt_real_gzip_label_gives_clear_error(seeds, tmp_path, recipe):
    _check_nifti(seeds, tmp_path, "real.nii.gz", recipe)


@settings(FUZZ, max_examples=200)
@given(
    dims=st.lists(st.integers(-(2**15), 2**15 - 1), min_size=8, max_size=8),
    datatype=st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 2304, 9999]),
    vox_offset=st.one_of(st.floats(-1e9, 1e12), st.just(float("nan"))),
)
def test_corrupt_header_fields_never_allocate_or_crash(seeds, tmp_path, dims, datatype, vox_offset):
    """Huge, negative or zero dims, unknown types, absurd offsets: refused without allocating."""
    buf = bytearray(seeds["crop.nii"])
    buf[40:56] = np.asarray(dims, dtype="<i2").tobytes()
    buf[70:72] = np.asarray([datatype], dtype="<i2").tobytes()
    buf[108:112] = np.asarray([vox_offset], dtype="<f4").tobytes()
    path = tmp_path / "hdr.nii"
    path.write_bytes(bytes(buf))
    try:
        read_all(path)
    except AmosegError as exc:
        assert "\n" not in exc.line()


# --- DICOM --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dicom_seed(realdata: Path) -> list[Path]:
    import SimpleITK  # noqa: F401  (import once here, not inside the first timed example)

    files = sorted((realdata / "example_ct" / "dicom").iterdir())[:3]
    return files


@settings(FUZZ, max_examples=15, deadline=30_000)
@given(recipe=corruption(header_bytes=1500), which=st.integers(0, 2))
def test_corrupt_dicom_series_gives_clear_error(dicom_seed, tmp_path, recipe, which):
    from amoseg.data.dicom import load_dicom_series

    folder = tmp_path / "series"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for n, src in enumerate(dicom_seed):
        data = src.read_bytes()
        (folder / src.name).write_bytes(corrupt(data, recipe) if n == which else data)
    try:
        img = load_dicom_series(folder)
    except AmosegError as exc:
        assert "\n" not in exc.line()
        return
    image_array(img, folder)  # whatever loads must be usable or refused clearly
