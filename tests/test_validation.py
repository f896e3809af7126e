"""Every numeric option and hyper-parameter is checked at the edge: a wrong value is one line
and exit 2 (never a traceback, never a run that trains to NaN and exits 0); a network too
large for memory is refused before it is built; a damaged checkpoint or study is one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amoseg.errors import AmosegError
from amoseg.training import TrainSettings
from tests.badfiles import amoseg_inprocess
from tests.tiny_store import make_tiny_store

FAST = ("--epochs", "1", "--device", "cpu", "--workers", "0")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_tiny_store(tmp_path_factory.mktemp("tiny") / "store", cases=4, slices=2, size=16)


def _one_line_error(res, *needles: str) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


BAD_TRAIN = [
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "-2"], "--epochs"),
    (["--max-slices", "0"], "--max-slices"),
    (["--seed", "-1"], "--seed"),
    (["--hparams", '{"base": 0}'], "base"),
    (["--hparams", '{"base": "wide"}'], "base"),
    (["--hparams", '{"depth": 2.5}'], "depth"),
    (["--hparams", '{"lambda_dice": NaN}'], "lambda_dice"),
    (["--hparams", '{"warmup": 3}'], "warmup"),
    (["--hparams", '{"window": [300, -100]}'], "window"),
    (["--hparams", '{"augment": "yes"}'], "augment"),
    (["--hparams", '{"lambda_dice": 0, "lambda_ce": 0}'], "both be 0"),
    (["--hparams", "[1, 2]"], "--hparams"),
]


@pytest.mark.parametrize("extra,names", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_training_values_are_one_line(store, tmp_path, extra, names):
    res = amoseg_inprocess("train", "unet", "--data", store, "--out", tmp_path / "r", *FAST, *extra)
    _one_line_error(res, names)
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_settings_objects_are_validated_for_python_callers_too(store, tmp_path):
    from amoseg.training import train

    with pytest.raises(AmosegError, match="--lr"):
        TrainSettings(lr=-1.0)
    with pytest.raises(AmosegError, match="hparams must be a JSON object"):
        TrainSettings(hparams=[("base", 8)])  # type: ignore[arg-type]
    # the values are the recipe's to check: train refuses before it makes the run folder
    with pytest.raises(AmosegError, match="hparams base is out of range"):
        train("unet", store, tmp_path / "run", TrainSettings(hparams={"base": 0}))
    with pytest.raises(AmosegError, match=r"unknown hyper-parameter.*stages.*'unet'"):
        train("unet", store, tmp_path / "run", TrainSettings(hparams={"stages": 3}))
    assert not (tmp_path / "run").exists()
    params = __import__("amoseg.models.unet", fromlist=["UNetModern"]).UNetModern.Params
    assert params.from_dict({"base": 8.0}, "unet").base == 8  # JSON 8.0 is 8


BAD_OTHER = [
    (["tune", "unet", "--data", "STORE", "--trials", "0"], "--trials"),
    (["tune", "unet", "--data", "STORE", "--timeout", "nan"], "--timeout"),
    (["tune", "unet", "--data", "STORE", "--heartbeat", "0"], "heartbeat"),
    (["tune", "unet", "--data", "STORE", "--hparams", '{"base": -4}'], "base"),
    (["prepare", "ROOT", "OUT", "--size", "0"], "--size"),
    (["prepare", "ROOT", "OUT", "--workers", "0"], "--workers"),
    (["score", "P", "G", "--tolerance", "-1"], "--tolerance"),
    (["synth", "OUT", "--cases", "0"], "cases"),
]


@pytest.mark.parametrize(
    "argv,names", BAD_OTHER, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_OTHER]
)
def test_bad_values_of_other_commands_are_one_line(store, tmp_path, argv, names):
    subst = {"STORE": str(store), "ROOT": str(tmp_path), "OUT": str(tmp_path / "o"),
             "P": str(tmp_path), "G": str(tmp_path)}  # fmt: skip
    res = amoseg_inprocess(*[subst.get(a, a) for a in argv])
    _one_line_error(res, names)


def test_a_network_too_large_for_memory_is_refused_before_it_is_built(store, tmp_path):
    hp = json.dumps({"base": 1024, "depth": 8})
    res = amoseg_inprocess("train", "unet", "--data", store, "--out", tmp_path / "r", *FAST,
                           "--hparams", hp)  # fmt: skip
    line = _one_line_error(res, "needs about", "GiB", "--batch-size")
    assert "parameters" in line and not (tmp_path / "r").exists()


def test_memory_estimate_counts_the_real_parameters():
    from amoseg.models.registry import model_class
    from amoseg.training.memory import estimate_training_memory

    hp = {"base": 8, "depth": 2, "norm": "window"}
    est = estimate_training_memory(model_class("unet"), 32, hp, 4)
    real = sum(p.numel() for p in model_class("unet")(input_size=32, **hp).net.parameters())
    assert est is not None and est.parameters == real and est.activation_values > 0
    bigger = estimate_training_memory(model_class("unet"), 32, hp, 8)
    assert bigger.bytes > est.bytes  # activations scale with the batch


def test_a_nan_loss_stops_training_with_one_line_and_exit_2(store, tmp_path, monkeypatch):
    from amoseg.models.torch_model import TorchModel

    monkeypatch.setattr(TorchModel, "loss", lambda self, logits, y: logits.sum() * math.nan)
    run = tmp_path / "r"
    res = amoseg_inprocess("train", "logreg-pixel", "--data", store, "--out", run, *FAST)
    _one_line_error(res, "training diverged", "nan", "--lr")
    assert not (run / "checkpoint_latest.pt").exists()  # the NaN weights were not saved


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "r"
    res = amoseg_inprocess("train", "logreg-pixel", "--data", store, "--out", run, *FAST)
    assert res.returncode == 0, res.stderr
    return run


def _damage(run: Path, tmp_path: Path, change) -> Path:
    ckpt = torch.load(run / "checkpoint_best.pt", weights_only=True)
    change(ckpt)
    broken = tmp_path / "broken"
    broken.mkdir()
    torch.save(ckpt, broken / "checkpoint_best.pt")
    return broken


DAMAGE = {
    "no state": lambda c: c.pop("state"),
    "no hparams": lambda c: c.pop("hparams"),
    "unknown model": lambda c: c.update(model="resnet-9000"),
    "hparams a list": lambda c: c.update(hparams=[1, 2]),
    "weights of another shape": lambda c: c["state"].update(
        {k: torch.zeros(3, 3) for k in list(c["state"])[:1]}
    ),
    "weights missing": lambda c: c.update(state={}),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_checkpoints_are_one_line(trained, tmp_path, damage):
    from amoseg.models.registry import load_model

    broken = _damage(trained, tmp_path, DAMAGE[damage])
    with pytest.raises(AmosegError):
        load_model(broken / "checkpoint_best.pt", "cpu")
    scan = tmp_path / "scan.nii.gz"
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(np.zeros((16, 16, 2), np.int16), np.eye(4)), str(scan))
    res = amoseg_inprocess("predict", broken, scan, "-o", tmp_path / "out", "--device", "cpu")
    _one_line_error(res, "checkpoint")


def test_resume_from_a_damaged_latest_checkpoint_is_one_line(store, trained, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(trained, run)
    ckpt = torch.load(run / "checkpoint_latest.pt", weights_only=True)
    ckpt.pop("optimizer")
    torch.save(ckpt, run / "checkpoint_latest.pt")
    res = amoseg_inprocess("train", "logreg-pixel", "--data", store, "--out", run, *FAST,
                           "--epochs", "2", "--resume")  # fmt: skip
    _one_line_error(res, "cannot be resumed", "--overwrite")


def test_a_corrupt_sqlite_study_is_one_line(store, tmp_path):
    out = tmp_path / "tune"
    out.mkdir()
    (out / "study.db").write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 8)
    res = amoseg_inprocess("tune", "logreg-pixel", "--data", store, "--out", out,
                           "--trials", "1", "--epochs", "1", "--device", "cpu")  # fmt: skip
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert lines[-1].startswith("error: ") and "not a usable database" in lines[-1]


# --- random option values: every outcome is exit 0 or exit 2 with one line ---------------

NUMBERS = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from(["", "x", "1e999", "-0", "0x10", "1_000", " 3", "nan", "-inf"]),
)
TRAIN_OPTIONS = ["--lr", "--weight-decay", "--epochs", "--batch-size", "--max-slices",
                 "--seed", "--workers", "--context"]  # fmt: skip
HPARAM_VALUES = st.one_of(
    NUMBERS.filter(lambda v: not isinstance(v, str)),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
)
HPARAMS = st.dictionaries(
    st.sampled_from(["base", "depth", "context", "window", "augment", "lambda_dice", "warmup",
                     "lambda_ce", "body_crop", "bogus"]),
    HPARAM_VALUES,
    max_size=3,
)  # fmt: skip


def _assert_clean(res) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode in (0, 2), (res.returncode, res.stderr)
    if res.returncode == 2:
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    options=st.lists(st.tuples(st.sampled_from(TRAIN_OPTIONS), NUMBERS), max_size=3),
    hparams=HPARAMS,
)
def test_random_train_options_never_give_a_traceback(tmp_path, options, hparams):
    argv = ["train", "unet", "--data", str(tmp_path / "no_store"), "--out", str(tmp_path / "r")]
    for name, value in options:
        argv += [name, str(value)]
    argv += ["--hparams", json.dumps(hparams)]
    _assert_clean(amoseg_inprocess(*argv))


OTHER = {
    "tune": (["tune", "unet", "--data", "{d}/no_store", "--out", "{d}/t"],
             ["--trials", "--epochs", "--timeout", "--heartbeat", "--seed", "--max-slices"]),
    "prepare": (["prepare", "{d}/no_root", "{d}/s"], ["--size", "--workers", "--seed"]),
    "score": (["score", "{d}/no_pred", "{d}/no_gt"], ["--tolerance"]),
    "predict": (["predict", "{d}/no_run", "{d}/no_scan", "-o", "{d}/o"], ["--batch-size"]),
}  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(command=st.sampled_from(sorted(OTHER)), values=st.lists(NUMBERS, min_size=1, max_size=3),
       data=st.data())  # fmt: skip
def test_random_options_of_other_commands_never_give_a_traceback(tmp_path, command, values, data):
    base, names = OTHER[command]
    argv = [a.format(d=tmp_path) for a in base]
    for value in values:
        argv += [data.draw(st.sampled_from(names)), str(value)]
    _assert_clean(amoseg_inprocess(*argv))


def test_library_warnings_become_one_line_notes(capsys, monkeypatch):
    import warnings

    from amoseg.cli import main as cli

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))
    cli.install_warning_notes()
    warnings.warn("the header's\nqform is odd", UserWarning, stacklevel=1)
    warnings.warn("old API", DeprecationWarning, stacklevel=1)
    warnings.warn("will change", FutureWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "warning: the header's qform is odd\n"
