"""What every command offers (issue 27): --quiet / --verbose anywhere, Apple `mps` as a
device, shell completion, and the values of fixed-choice options listed in --help."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import typer

from amoseg import progress
from amoseg.cli.main import CHOICES, COMPLETE_VAR, app
from amoseg.devices import resolve_device
from amoseg.errors import AmosegError
from tests.badfiles import REPO, amoseg_inprocess

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("flag", ["--quiet", "--verbose"])
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_quiet_and_verbose_before_or_after_it(command, flag):
    for argv in ([flag, command, "--help"], [command, flag, "--help"]):
        res = amoseg_inprocess(*argv)
        assert res.returncode == 0, (argv, res.stderr)
        assert "Usage" in res.stdout


def test_quiet_hides_progress_bars_and_verbose_times_the_command(tmp_path):
    from tests.badfiles import GOOD_IDS, good_label, write_nifti

    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_nifti(pred / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    write_nifti(gt / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    res = amoseg_inprocess("score", pred, gt, "--verbose")
    assert res.returncode == 0 and "done in" in res.stderr
    res = amoseg_inprocess("score", pred, gt, "--quiet")
    assert res.returncode == 0 and "done in" not in res.stderr
    progress.set_verbosity(progress.QUIET)
    try:
        assert progress.progress_bar("x").disable  # even on a terminal
    finally:
        progress.set_verbosity(0)
    res = amoseg_inprocess("--quiet", "--verbose", "score", pred, gt)
    assert res.returncode == 2 and res.stderr.count("error: ") == 1


def test_mps_is_a_device_where_torch_has_it(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(AmosegError, match="Apple MPS was requested"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps").type == "mps"
    assert resolve_device("auto").type in ("cpu", "cuda")  # never MPS unasked
    with pytest.raises(AmosegError, match="mps"):
        resolve_device("tpu")  # the hint lists it


def test_an_unavailable_mps_is_one_line(tmp_path):
    res = amoseg_inprocess("predict", tmp_path, tmp_path / "x.nii.gz", "-o", tmp_path / "o",
                           "--device", "mps")  # fmt: skip
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert res.returncode == 2 and res.stderr.count("error: ") == 1
    assert "Apple MPS was requested" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("key", sorted(CHOICES, key=str))
def test_fixed_choices_are_listed_in_help(key, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per option: the list is not wrapped
    command, option = key if isinstance(key, tuple) else (None, key)
    shown = "[" + "|".join(CHOICES[key]) + "]"
    found = False
    for name in [command] if command else [c for c in COMMANDS if (c, option) not in CHOICES]:
        res = amoseg_inprocess(name, "--help")
        if option not in res.stdout:
            continue
        found = True
        assert shown in res.stdout, (name, option)
    assert found, f"no command has {option}"


def test_shell_completion_is_installable_and_completes_commands_and_values():
    env = {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": "ignore"}
    show = subprocess.run([sys.executable, "-m", "amoseg", "--show-completion", "bash"],
                          capture_output=True, text=True, cwd=REPO, env=env)  # fmt: skip
    assert show.returncode == 0 and "_amoseg_completion" in show.stdout

    def complete(words: str) -> list[str]:
        cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
        res = subprocess.run(
            [sys.executable, "-m", "amoseg"], capture_output=True, text=True, cwd=REPO,
            env={**env, COMPLETE_VAR: "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword},
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        return res.stdout.split()

    assert {"predict", "prepare"} <= set(complete("amoseg pre"))
    assert complete("amoseg predict --format ") == ["nifti", "dicom-seg", "both"]
    assert complete("amoseg train --device c") == ["cpu", "cuda"]
