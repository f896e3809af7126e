"""The HTML viewer: self-contained, and in headless Chromium the overlay shows and follows
the slider, the organ toggles and the opacity."""

from __future__ import annotations

import base64
import gzip
import json
import re

import nibabel as nib
import numpy as np
import pytest

from amoseg.cli.main import main
from amoseg.data.geometry import to_canonical
from amoseg.inference.volumes import organ_volumes
from amoseg.labels import CLASS_COLORS
from amoseg.reports.viewer import display_strides, viewer_html, write_viewer
from tests.browser import Browser, chromium_or_skip, colour_share

LIVER, SPLEEN, AORTA = 6, 1, 8


def synthetic_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LAS 40×36×24 CT: liver in the lower 12 slices, spleen in the upper 12, aorta in all."""
    affine = np.diag([-1.5, 1.5, 3.0, 1.0])
    image = np.full((40, 36, 24), -50, np.int16)
    labels = np.zeros(image.shape, np.uint8)
    labels[5:20, 5:25, :12] = LIVER
    labels[22:35, 8:30, 12:] = SPLEEN
    labels[18:22, 28:32, :] = AORTA
    image[labels > 0] = 60
    return image, labels, affine


def set_control(browser: Browser, selector: str, **props: object) -> None:
    """Set a control's properties and fire the event the page listens to, as a user would."""
    event = "change" if "checked" in props else "input"
    assign = "".join(f"el.{k} = {json.dumps(v)};" for k, v in props.items())
    browser.evaluate(
        f"(() => {{ const el = document.querySelector({json.dumps(selector)}); {assign}"
        f" el.dispatchEvent(new Event('{event}', {{bubbles: true}})); }})()"
    )


def embedded(html: str) -> dict:
    return json.loads(re.search(r'<script id="amoseg-data"[^>]*>(.*?)</script>', html, re.S)[1])


def unpack(b64: str, shape: list[int]) -> np.ndarray:
    raw = np.frombuffer(gzip.decompress(base64.b64decode(b64)), np.uint8)
    return raw.reshape(shape[::-1]).transpose(2, 1, 0)


def test_page_is_self_contained_and_embeds_the_exact_labels():
    image, labels, affine = synthetic_case()
    html = viewer_html(labels, affine, organ_volumes(labels, image, affine), image, title="c<1>")
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I)  # no external URL
    assert "default-src 'none'" in html  # the page may not fetch anything
    assert "<title>c&lt;1&gt; · amoseg</title>" in html
    data = embedded(html)
    np.testing.assert_array_equal(
        unpack(data["labels"], data["shape"]), to_canonical(labels, affine)
    )
    assert data["spacing"] == [1.5, 1.5, 3.0]


def test_large_volumes_are_reduced_by_whole_voxel_strides():
    assert display_strides((512, 512, 100)) == (2, 2, 1)
    assert display_strides((100, 100, 50)) == (1, 1, 1)
    strides = display_strides((512, 512, 900))
    assert (
        np.prod([np.ceil(n / s) for n, s in zip((512, 512, 900), strides, strict=True)])
        <= 8_000_000
    )


@pytest.fixture(scope="module")
def browser():
    instance = Browser(chromium_or_skip())
    yield instance
    instance.close()


def test_overlay_follows_slider_toggles_and_opacity(browser, tmp_path):
    image, labels, affine = synthetic_case()
    page = write_viewer(tmp_path / "c.html", labels, affine, organ_volumes(labels, image, affine),
                        image)  # fmt: skip
    assert browser.open(page) == "1"
    set_control(browser, "#opacity", value=100)

    def axial_at(index: int) -> np.ndarray:
        set_control(browser, "#axial-slider", value=index)
        return browser.screenshot("#axial")

    low = axial_at(3)
    assert colour_share(low, CLASS_COLORS[LIVER]) > 0.05
    assert colour_share(low, CLASS_COLORS[SPLEEN]) == 0
    assert colour_share(low, CLASS_COLORS[AORTA]) > 0.002
    high = axial_at(20)
    assert colour_share(high, CLASS_COLORS[LIVER]) == 0
    assert colour_share(high, CLASS_COLORS[SPLEEN]) > 0.05
    assert browser.evaluate("document.getElementById('axial-pos').textContent") == "21 / 24"

    set_control(browser, 'input[data-label="1"]', checked=False)
    hidden = browser.screenshot("#axial")
    assert colour_share(hidden, CLASS_COLORS[SPLEEN]) == 0
    assert colour_share(hidden, CLASS_COLORS[AORTA]) > 0.002  # the others stay

    set_control(browser, "#opacity", value=0)
    bare = browser.screenshot("#axial").astype(int)
    assert np.abs(bare - bare[..., :1]).max() <= 2  # grey CT only: no colour left
    coronal = browser.screenshot("#coronal")
    assert coronal.std() > 5  # the other views are drawn too


def test_view_command_on_real_ct_shows_its_organs(browser, realdata, tmp_path):
    ct = realdata / "example_ct" / "ct.nii.gz"
    labels_path = realdata / "example_ct" / "labels_amos_model.nii.gz"
    target = tmp_path / "real.html"
    main(["view", str(labels_path), str(ct), "-o", str(target)])
    assert browser.open(target) == "1"
    rows = browser.evaluate("document.querySelectorAll('#organs tbody tr').length")
    assert rows == 15
    set_control(browser, "#opacity", value=100)
    shot = browser.screenshot("#axial")
    labels = np.asarray(nib.load(str(labels_path)).dataobj)
    shown = [i for i in range(1, 16) if colour_share(shot, CLASS_COLORS[i], tol=0) > 0.001]
    assert len(shown) >= 4 and set(shown) <= set(np.unique(labels).tolist())


def test_predict_html_writes_one_offline_page_per_scan(tiny_unet_run, realdata, tmp_path, browser):
    out = tmp_path / "out"
    main(["predict", str(tiny_unet_run), str(realdata / "example_ct" / "ct.nii.gz"), "-o",
          str(out), "--html"])  # fmt: skip
    pages = sorted(out.glob("*.html"))
    assert [p.name for p in pages] == ["ct_viewer.html"]
    html = pages[0].read_text()
    assert "http://" not in html and "https://" not in html
    assert browser.open(pages[0]) == "1"


def test_view_refuses_to_overwrite_and_mismatched_image(realdata, tmp_path, capsys):
    labels_path = realdata / "example_ct" / "labels_amos_model.nii.gz"
    target = tmp_path / "v.html"
    target.write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["view", str(labels_path), "-o", str(target)])
    assert exit_info.value.code == 2 and target.read_text() == "mine"
    other = realdata / "amos_mini" / "imagesTr" / "amos_0001.nii.gz"
    with pytest.raises(SystemExit):
        main(["view", str(labels_path), str(other), "-o", str(tmp_path / "w.html")])
    assert "differ in shape" in capsys.readouterr().err


def _view_page(tmp_path, labels, seg_affine, image, image_affine) -> tuple[dict, list[str]]:
    """Run `amoseg view` on NIfTI files → the embedded page data."""
    seg_path, img_path = tmp_path / "c_seg.nii.gz", tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(labels, seg_affine), seg_path)
    nib.save(nib.Nifti1Image(image, image_affine), img_path)
    target = tmp_path / "c.html"
    main(["view", str(seg_path), str(img_path), "-o", str(target), "--overwrite"])
    return embedded(target.read_text())


def _mean_hu(data: dict) -> dict[int, float | None]:
    return {row["label"]: row["mean_hu"] for row in data["organs"]}


def test_view_reindexes_a_scan_stored_mirrored_or_transposed(tmp_path):
    """The same voxels stored in another axis order or direction: the table's mean HU and
    the picture come from the voxels under each label."""
    image, labels, affine = synthetic_case()
    image[labels == SPLEEN] = 120  # liver 60, spleen 120: a mirror would swap them
    expected = _mean_hu(embedded(viewer_html(labels, affine, organ_volumes(labels, image, affine),
                                             image)))  # fmt: skip
    assert expected[LIVER] == 60 and expected[SPLEEN] == 120
    flip_x = np.diag([-1.0, 1, 1, 1])
    flip_x[0, 3] = image.shape[0] - 1  # voxel i of the copy is voxel n-1-i of the original
    mirrored = np.ascontiguousarray(image[::-1])
    assert _mean_hu(_view_page(tmp_path, labels, affine, mirrored, affine @ flip_x)) == expected
    swap_xy = np.eye(4)[[1, 0, 2, 3]]
    transposed = np.ascontiguousarray(image.transpose(1, 0, 2))
    page = _view_page(tmp_path, labels, affine, transposed, affine @ swap_xy)
    assert _mean_hu(page) == expected


@pytest.mark.parametrize(
    "change",
    [np.diag([-1.0, 1, 1, 1]), np.diag([1.0, 1, 1.5, 1]), np.eye(4) + np.eye(4, k=3) * 0.5],
    ids=["mirrored-in-space", "other-spacing", "half-voxel-shift"],
)
def test_view_refuses_an_image_on_another_grid(tmp_path, capsys, change):
    """Same shape, other place in space: one line, exit 2, no page."""
    image, labels, affine = synthetic_case()
    with pytest.raises(SystemExit) as exit_info:
        _view_page(tmp_path, labels, affine, image, affine @ change)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "different voxel grids" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.html").exists()
