"""evaluate: metrics from confusion matrices, per-volume 3D Dice, figures, leaky stores refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amoseg.atomic import read_json, write_json
from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.labels import CLASS_NAMES
from amoseg.models.base import SegmentationModel
from amoseg.reports.evaluate import evaluate_model, evaluate_run
from amoseg.store.slice_store import SliceStore
from tests.tiny_store import store_from_slices

SIZE = 16
DROPPED = 3  # the fake model never predicts this class (left kidney)


class IntensityModel(SegmentationModel):
    """Reads the class straight from the intensity (image = 100 × label) but never outputs
    class DROPPED, so every metric has a known exact value."""

    name = "fake"

    def __init__(self, input_size: int = SIZE):
        self.input_size = input_size

    def fit(self, store, settings, run_dir, **kwargs):
        raise NotImplementedError

    def predict_batch(self, x):
        labels = np.clip(np.rint(x[:, 0] / 100.0), 0, 15).astype(np.uint8)
        labels[labels == DROPPED] = 0
        probs = np.eye(16, dtype=np.float32)[labels].transpose(0, 3, 1, 2)
        return labels, probs

    def save(self, path):
        raise NotImplementedError

    @classmethod
    def load(cls, path, device="auto"):
        return cls()


def _case_label(rng: np.random.Generator, n: int, classes: list[int]) -> np.ndarray:
    label = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    for z in range(n):
        for k, c in enumerate(classes):
            if rng.random() < 0.8:
                r0 = 1 + 3 * k % (SIZE - 4)
                label[z, r0 : r0 + 3, 2 + z % 4 : 6 + z % 4] = c
    return label


def make_store(root: Path, splits: dict[str, list[str]] | None = None) -> Path:
    rng = np.random.default_rng(0)
    splits = splits or {
        "train": ["amos_0001"],
        "val": ["amos_0002"],
        "test": ["amos_0003", "amos_0004"],
    }
    classes = {
        "amos_0001": [1, 2],
        "amos_0002": [1, 6],
        "amos_0003": [1, 3, 6],
        "amos_0004": [2, 6],
    }
    cases = {}
    for case in sorted({c for v in splits.values() for c in v}):
        label = _case_label(rng, 5, classes[case])
        cases[case] = ((label.astype(np.int16) * 100).astype(np.int16), label)
    return store_from_slices(root, cases, splits)


def expected_metrics(store: SliceStore) -> dict[str, float]:
    truth = np.concatenate([np.asarray(store.label(c)) for c in store.cases("test")]).ravel()
    pred = np.where(truth == DROPPED, 0, truth)
    present = [c for c in range(16) if (truth == c).any() or (pred == c).any()]
    iou = {
        c: ((truth == c) & (pred == c)).sum() / ((truth == c) | (pred == c)).sum() for c in present
    }
    dice = {
        c: 2 * ((truth == c) & (pred == c)).sum() / ((truth == c).sum() + (pred == c).sum())
        for c in present
    }
    return {
        "accuracy": float((truth == pred).mean()),
        "miou": float(np.mean(list(iou.values()))),
        "mean_dice": float(np.mean([dice[c] for c in present if c > 0])),
    }


@pytest.fixture
def store(tmp_path: Path) -> SliceStore:
    return SliceStore(make_store(tmp_path / "store"))


@pytest.fixture
def fake_training(monkeypatch):
    """Stand-in for a run's bundle, so evaluate_run is tested without training."""
    from tests.predict_models import FakeBundle

    monkeypatch.setattr(
        "amoseg.inference.bundle.run_bundle",
        lambda run_dir: FakeBundle(Path(run_dir), IntensityModel()),
    )


def make_run(run_dir: Path, store_root: Path, model: str = "fake") -> Path:
    write_json(
        run_dir / "config.json", {"model": model, "store": {"path": str(store_root), "size": SIZE}}
    )
    return run_dir


def test_metrics_match_hand_computed_values(store):
    metrics, _ = evaluate_model(IntensityModel(), store, "test", progress=False)
    expected = expected_metrics(store)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    assert metrics["n_slices"] == 10 and metrics["n_cases"] == 2
    dropped = metrics["per_class"][DROPPED]
    assert (
        dropped["name"] == CLASS_NAMES[DROPPED] and dropped["iou"] == 0.0 and not dropped["absent"]
    )
    absent = metrics["per_class"][15]
    assert absent["absent"] and absent["iou"] is None and absent["dice"] is None
    assert metrics["slices_per_s"] > 0
    assert np.asarray(metrics["confusion_matrix"]).sum() == 10 * SIZE * SIZE


def test_per_volume_dice_is_3d_dice_of_each_volume(store):
    metrics, _ = evaluate_model(IntensityModel(), store, "test", progress=False)
    by_case = {v["case_id"]: v for v in metrics["per_volume"]}
    for case in store.cases("test"):
        truth = np.asarray(store.label(case))
        pred = np.where(truth == DROPPED, 0, truth)
        for c in (1, 2, 3, 6):
            t, p = truth == c, pred == c
            got = by_case[case]["dice"][CLASS_NAMES[c]]
            if not t.any() and not p.any():
                assert got is None
            else:
                assert got == pytest.approx(2 * (t & p).sum() / (t.sum() + p.sum()))
    # amos_0004 has no left kidney, so the model is perfect there.
    assert by_case["amos_0004"]["mean_dice"] == pytest.approx(1.0)
    assert by_case["amos_0003"]["mean_dice"] < 1.0


def test_overlay_slices_are_chosen_from_truth_with_most_organs(store):
    _, samples = evaluate_model(IntensityModel(), store, "test", n_overlay=1, progress=False)
    (s,) = samples
    organs = [
        len(set(np.unique(store.label(c)[i])) - {0}) for c in store.cases("test") for i in range(5)
    ]
    assert len(set(np.unique(s.truth)) - {0}) == max(organs)
    assert s.pred.shape == s.truth.shape == (SIZE, SIZE)


def test_evaluate_run_writes_metrics_and_pngs(tmp_path, store, fake_training):
    run = make_run(tmp_path / "run", store.root)
    metrics = evaluate_run(run, progress=False)  # store taken from config.json
    out = run / "eval_test"
    saved = read_json(out / "metrics.json")
    assert saved["miou"] == metrics["miou"] and saved["model"] == "fake"
    for png in ("confusion_matrix.png", "overlay.png"):
        with Image.open(out / png) as img:
            assert img.format == "PNG" and img.size[0] > 200
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_refuses_store_with_overlapping_splits(tmp_path, fake_training, capsys):
    root = make_store(
        tmp_path / "leaky",
        {"train": ["amos_0001", "amos_0003"], "val": ["amos_0002"], "test": ["amos_0003"]},
    )
    run = make_run(tmp_path / "run", root)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(run), "--data", str(root)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: case amos_0003 is in both") and "Traceback" not in err
    assert not (run / "eval_test").exists()


def test_refuses_store_of_another_size(store):
    with pytest.raises(AmosegError, match="trained on 32"):
        evaluate_model(IntensityModel(input_size=32), store, "test", progress=False)


def test_cli_prints_summary(tmp_path, store, fake_training, capsys):
    run = make_run(tmp_path / "run", store.root)
    main(["evaluate", str(run), "--data", str(store.root), "--split", "val"])
    out = capsys.readouterr().out
    assert "mIoU" in out and "eval_val" in out
    assert (run / "eval_val" / "metrics.json").exists()
