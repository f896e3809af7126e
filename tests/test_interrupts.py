"""Ctrl-C (SIGINT) and SIGTERM stop every long command with exit 130 / 143 and one line that
says what was finished, so `amoseg … && next-step` never carries on after a half-done job.

Each test starts a real `python -m amoseg` process, waits until it has finished some work
(a file on disk), signals it, and checks the exit status, the line, and that the line is true.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests import badfiles
from tests.predict_models import make_tiny_run
from tests.signals import interrupt_when, last_line

pytestmark = pytest.mark.timeout(300)
TINY_UNET = '{"base": 4, "depth": 2, "augment": false}'


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(store, run): a 4-case store and a unet trained on it for one epoch."""
    base = tmp_path_factory.mktemp("tiny")
    run = make_tiny_run(base)
    return base / "store", run


def test_predict_sigint_exits_130_and_lists_the_written_scans(tiny, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(0)
    for n in range(12):
        data = rng.normal(-100, 50, (96, 96, 24)).astype(np.int16)
        image = nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1]))
        nib.save(image, str(scans / f"s{n:02d}.nii.gz"))
    out = tmp_path / "out"
    code, _, err = interrupt_when(
        ["predict", str(tiny[1]), str(scans), "-o", str(out), "--device", "cpu"],
        ready=lambda: len(list(out.glob("*_volumes.json"))) >= 2,
    )
    line = last_line(err)
    assert code == 130, err
    pattern = r"interrupted \(Ctrl-C\); predict wrote (\d+) of 12 scans to .*: (.*)"
    match = re.fullmatch(pattern, line)
    assert match, line
    listed = set(match.group(2).split(", "))
    assert 1 <= int(match.group(1)) == len(listed) < 12
    on_disk = {p.name for p in out.glob("*_seg.nii.gz")}
    # every listed scan is complete; at most the one being reported is missing from the line
    assert listed <= on_disk and len(on_disk - listed) <= 1, (listed, on_disk)
    assert not badfiles.leftovers(out)


@pytest.mark.slow  # ~10 s on an idle 2-core CPU: a fresh interpreter plus one epoch
def test_train_sigterm_exits_143_and_names_the_last_saved_epoch(tiny, tmp_path):
    import torch

    run = tmp_path / "run"
    argv = ["train", "unet", "--data", str(tiny[0]), "--out", str(run), "--epochs", "500",
            "--hparams", TINY_UNET, "--device", "cpu", "--workers", "0"]  # fmt: skip
    code, _, err = interrupt_when(
        argv, ready=lambda: (run / "checkpoint_latest.pt").exists(), sig=signal.SIGTERM
    )
    line = last_line(err)
    assert code == 143, err
    match = re.fullmatch(r"interrupted \(SIGTERM\); train saved epoch (\d+) of 500 in .* "
                         r"\(continue with --resume\)", line)  # fmt: skip
    assert match, line
    saved = torch.load(run / "checkpoint_latest.pt", map_location="cpu", weights_only=False)
    assert saved["epoch"] == int(match.group(1))


def test_prepare_sigint_exits_130_and_counts_the_finished_cases(tmp_path):
    ids = tuple(f"amos_{n:04d}" for n in range(1, 13))
    root = badfiles.amos_root(tmp_path / "root", ids=ids, shape=(96, 96, 40))
    store = tmp_path / "store"
    cases = store / "cases"
    code, _, err = interrupt_when(
        ["prepare", str(root), str(store), "--size", "64", "--keep", "all", "--workers", "1"],
        # two cases on disk: one worker counts case 1 before it starts case 2
        ready=lambda: (
            cases.is_dir() and sum(not p.name.startswith(".") for p in cases.iterdir()) >= 2
        ),
    )
    line = last_line(err)
    assert code == 130, err
    match = re.fullmatch(r"interrupted \(Ctrl-C\); prepare finished (\d+) of 12 cases in .*", line)
    assert match, line
    done = [p for p in cases.iterdir() if not p.name.startswith(".")]
    assert 1 <= int(match.group(1)) <= len(done) < 12  # a case may land after the count
    assert not (store / "store.json").exists() and not badfiles.leftovers(store)


@pytest.mark.slow  # ~15 s on an idle 2-core CPU: a fresh interpreter plus one trial
def test_tune_sigterm_exits_143_and_fails_the_running_trial(tiny, tmp_path):
    import optuna

    out = tmp_path / "tune"
    code, _, err = interrupt_when(
        ["tune", "unet", "--data", str(tiny[0]), "--trials", "50", "--epochs", "1",
         "--out", str(out), "--device", "cpu", "--max-slices", "4", "--hparams", TINY_UNET],
        ready=lambda: (out / "trials" / "trial_0001").exists(),
        sig=signal.SIGTERM,
    )  # fmt: skip
    line = last_line(err)
    assert code == 143, err
    match = re.fullmatch(r"interrupted \(SIGTERM\); tune: (\d+) of 50 trials finished .*", line)
    assert match and int(match.group(1)) >= 1, line
    study = optuna.load_study(study_name="amoseg-unet", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states, states  # the interrupted trial is closed, not a zombie


def test_an_inner_command_keeps_the_outer_commands_line():
    """train inside a tune trial notes its epochs; the interrupt line still says the trials."""
    from amoseg import interrupts

    interrupts.clear_pending()
    interrupts.note_finished("tune: 1 of 5 trials finished")
    with interrupts.nested():
        interrupts.note_finished("train saved epoch 2 of 9 in trial_0001")
    assert interrupts.finished() == "tune: 1 of 5 trials finished"
    interrupts.note_finished("tune: 2 of 5 trials finished")
    assert interrupts.finished() == "tune: 2 of 5 trials finished"
    interrupts.note_finished(None)
