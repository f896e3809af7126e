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
from amoseg.inference.volumes import organ_volumes
from amoseg.labels import CLASS_COLORS
from amoseg.preprocessing.geometry import to_canonical
from amoseg.render.viewer import display_strides, viewer_html, write_viewer
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


def set_control(browser: Browser, selector: str, event: str | None = None, **props: object) -> None:
    """Set a control's properties and fire the event the page listens to, as a user would."""
    event = event or ("change" if "checked" in props else "input")
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


GALLBLADDER = 4
CYAN = (0, 255, 255)  # the crosshair's colour


def test_markers_wheel_click_window_level_and_zoom(browser, tmp_path):
    """Real wheel and click events move the slices and the crosshair, the presets and typed
    W/L change the grey levels, zoom enlarges the organs around the cursor, and the
    orientation markers sit beside the side of the patient they name."""
    image, labels, affine = synthetic_case()
    labels[25:28, 2:5, 3:6] = GALLBLADDER  # inside the scan: the only organ not cut by its edge
    page = write_viewer(tmp_path / "c.html", labels, affine, organ_volumes(labels, image, affine),
                        image)  # fmt: skip
    assert browser.open(page) == "1"

    def state() -> dict:
        return json.loads(browser.evaluate("JSON.stringify(window.amoseg.state)"))

    start = state()
    assert (start["width"], start["level"], start["preset"]) == (400, 40, "abdomen")
    assert start["crosshair"] is False

    # orientation: in the coronal view the patient's right (the liver) is on the R side, the
    # superior end (the spleen's slices in this phantom) under S
    set_control(browser, "#opacity", value=100)
    set_control(browser, "#coronal-slider", value=15)
    shot = browser.screenshot("#coronal")
    liver_rows, liver_cols = np.nonzero(np.all(shot == CLASS_COLORS[LIVER], axis=-1))
    spleen_rows, spleen_cols = np.nonzero(np.all(shot == CLASS_COLORS[SPLEEN], axis=-1))
    half = shot.shape[1] / 2
    assert liver_cols.mean() < half < spleen_cols.mean()
    assert spleen_rows.mean() < liver_rows.mean()
    markers = browser.evaluate(
        "[...document.getElementById('coronal').parentElement.querySelectorAll('.mk')]"
        ".map(m => [m.className, m.textContent, m.getBoundingClientRect().x])"
    )
    sides = {cls.split()[1]: (text, x) for cls, text, x in markers}
    canvas_x, _, canvas_w, _ = browser.box("#coronal")
    assert sides["left"][0] == "R" and sides["left"][1] < canvas_x
    assert sides["right"][0] == "L" and sides["right"][1] >= canvas_x + canvas_w
    assert sides["top"][0] == "S" and sides["bottom"][0] == "I"
    axial_marks = browser.evaluate(
        "[...document.getElementById('axial').parentElement.querySelectorAll('.mk')]"
        ".map(m => m.textContent).join('')"
    )
    assert sorted(axial_marks) == sorted("ARLP")

    # wheel: one notch up = next slice, down = previous
    axial = start["slices"]["axial"]
    browser.wheel("#axial", -100)
    assert state()["slices"]["axial"] == axial + 1
    for _ in range(3):
        browser.wheel("#axial", 100)
    axial -= 2
    assert state()["slices"]["axial"] == axial
    assert (
        browser.evaluate("document.getElementById('axial-pos').textContent") == f"{axial + 1} / 24"
    )
    assert browser.evaluate("document.getElementById('axial-slider').value") == str(axial)

    # click in the axial view at column 10, row 27 → voxel x = 39 - 10, y = 35 - 27
    browser.click("#axial", 10.5 / 40, 27.5 / 36)
    after = state()
    assert after["crosshair"] is True
    assert after["slices"] == {"axial": axial, "sagittal": 29, "coronal": 8}
    coronal = browser.screenshot("#coronal")
    cyan = np.all(coronal == CYAN, axis=-1)
    assert abs(int(cyan.sum(axis=0).argmax()) - int(10.5 * coronal.shape[1] / 40)) <= 1
    z_row = 23 - axial  # coronal rows run superior → inferior
    assert abs(int(cyan.sum(axis=1).argmax()) - int((z_row + 0.5) * coronal.shape[0] / 24)) <= 1
    sagittal = browser.screenshot("#sagittal")
    column = np.all(sagittal == CYAN, axis=-1).sum(axis=0).argmax()
    assert abs(int(column) - int((35 - 8 + 0.5) * sagittal.shape[1] / 36)) <= 1

    # window / level: background is -50 HU
    set_control(browser, "#opacity", value=0)
    set_control(browser, "#crosshair", checked=False)

    def background_grey() -> float:
        return float(np.median(browser.screenshot("#axial")[..., 0]))

    assert abs(background_grey() - 255 * (-50 + 160) / 400) <= 1  # abdomen W400 L40
    set_control(browser, "#wl-preset", event="change", value="liver")
    assert (state()["width"], state()["level"]) == (150, 60)
    assert browser.evaluate("document.getElementById('wl-width').value") == "150"
    assert background_grey() == 0  # below the liver window's floor (-15 HU)
    set_control(browser, "#wl-width", value="200")
    set_control(browser, "#wl-level", value="-50")
    now = state()
    assert (now["width"], now["level"], now["preset"]) == (200, -50, "custom")
    assert abs(background_grey() - 127.5) <= 1

    # zoom: around the cursor (inside the liver) the liver fills more of the view
    set_control(browser, "#opacity", value=100)
    before = colour_share(browser.screenshot("#axial"), CLASS_COLORS[LIVER], tol=0)
    set_control(browser, "#zoom", value=2)
    zoomed = colour_share(browser.screenshot("#axial"), CLASS_COLORS[LIVER], tol=0)
    assert state()["zoom"] == 2 and zoomed > 1.5 * before
    browser.wheel("#axial", -100, shift=True)
    assert state()["zoom"] == 2.5 and state()["slices"]["axial"] == axial  # shift: no slice

    # organs cut by the scan's edge are flagged, with their volume as a lower bound
    rows = browser.evaluate(
        "[...document.querySelectorAll('#organs tbody tr')].map(tr => [tr.className,"
        " tr.cells[1].textContent, tr.cells[2].textContent])"
    )
    flagged = {organ.replace("truncated", "") for cls, organ, _ in rows if "truncated" in cls}
    assert flagged == {"liver", "spleen", "aorta"}
    by_name = {organ.replace("truncated", ""): ml for _, organ, ml in rows}
    assert by_name["liver"].startswith("≥ ") and not by_name["gallbladder"].startswith("≥")
    assert "liver" in browser.evaluate("document.getElementById('cut-note').textContent")


def test_truncated_flags_and_mr_windows_are_computed_in_python():
    image, labels, affine = synthetic_case()
    labels[25:28, 2:5, 3:6] = GALLBLADDER
    data = embedded(viewer_html(labels, affine, organ_volumes(labels, image, affine), image))
    cut = {row["label"] for row in data["organs"] if row["truncated"]}
    assert cut == {LIVER, SPLEEN, AORTA}
    assert [p["name"] for p in data["presets"]] == ["abdomen", "liver", "bone", "lung"]
    mr = np.random.default_rng(0).integers(0, 1000, image.shape).astype(np.int16)
    data = embedded(viewer_html(labels, affine, [], mr, modality="mr"))
    lo, hi = np.percentile(to_canonical(mr, affine), (1, 99))
    auto = data["presets"][0]
    assert auto["name"].startswith("auto")
    assert auto["width"] == pytest.approx(hi - lo, abs=1e-3)
    assert auto["level"] == pytest.approx((lo + hi) / 2, abs=1e-3)
    codes = unpack_codes(data)
    np.testing.assert_array_equal(codes, to_canonical(mr, affine))  # integer MR kept exactly


def unpack_codes(data: dict) -> np.ndarray:
    """The page's 16-bit image back as values (offset + scale × code)."""
    raw = np.frombuffer(gzip.decompress(base64.b64decode(data["image"])), np.uint8)
    high, low = raw[: raw.size // 2].astype(np.uint16), raw[raw.size // 2 :].astype(np.uint16)
    codes = ((high << 8) | low).reshape(data["shape"][::-1]).transpose(2, 1, 0)
    return data["codes"]["offset"] + data["codes"]["scale"] * codes.astype(np.float64)


def test_mr_page_names_its_intensity_column_and_no_image_shows_dashes(browser, tmp_path):
    image, labels, affine = synthetic_case()
    rows = organ_volumes(labels, image, affine)
    mr_rows = [
        {**{k: v for k, v in r.items() if k != "mean_hu"}, "mean_intensity": r["mean_hu"]}
        for r in rows
    ]  # fmt: skip  (rows that name MR values mean_intensity only)
    page = write_viewer(tmp_path / "mr.html", labels, affine, mr_rows, image, modality="mr")
    assert browser.open(page) == "1"
    cells = "[...document.querySelectorAll('#organs tbody tr')].map(tr => tr.cells[3].textContent)"
    assert browser.evaluate("document.getElementById('intensity-head').textContent") == (
        "mean intensity"
    )
    assert browser.evaluate(cells)[LIVER - 1] == "60"
    assert browser.evaluate("document.getElementById('wl-preset').value").startswith("auto")
    bare = write_viewer(tmp_path / "bare.html", labels, affine, rows)
    assert browser.open(bare) == "1"
    assert set(browser.evaluate(cells)) == {"–"}
    assert browser.evaluate("document.getElementById('wl-preset').disabled") is True
