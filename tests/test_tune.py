"""`amoseg tune`: search space, shared SQLite studies with several workers, heartbeat recovery,
bad input, and one real tuning run on a tiny store.

Most tests use a fast fake trial function (a smooth function of the parameters) so the Optuna
machinery is exercised in seconds; workers are separate processes (spawned, so each has its
own database connections, like separate `amoseg tune` commands).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from amoseg.errors import AmosegError
from amoseg.tuning import (
    TuneConfig,
    best_params,
    load_space,
    open_storage,
    open_study,
    plot_history,
    run_study,
    sqlite_url,
    trials_table,
    write_best_params,
)
from amoseg.tuning.search_space import PARAM_NAMES
from tests.conftest import REPO

SPAWN = multiprocessing.get_context("spawn")


# ---------------------------------------------------------------- fake trials and workers


def fake_score(params: dict, epoch: int) -> float:
    """Peaks at lr=1e-3, weight_decay=1e-4, batch 8; improves with epochs."""
    distance = (
        abs(math.log10(params["lr"]) + 3)
        + 0.5 * abs(math.log10(params["weight_decay"]) + 4)
        + 0.1 * abs(math.log2(params["batch_size"]) - 3)
    )
    return 1.0 / (1.0 + distance) * (1 - 0.5 ** (epoch + 1))


def make_fake(epochs: int = 2, sleep_s: float = 0.0, barrier: tuple[Path, int] | None = None):
    def trial_fn(params, trial_dir, report):
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / "started").write_text(str(os.getpid()))
        if barrier is not None:  # every worker holds a trial before any finishes one
            folder, n = barrier
            (folder / f"ready_{os.getpid()}").touch()
            deadline = time.monotonic() + 60
            while len(list(folder.glob("ready_*"))) < n and time.monotonic() < deadline:
                time.sleep(0.05)
        value = 0.0
        for epoch in range(epochs):
            time.sleep(sleep_s)
            value = fake_score(params, epoch)
            report(epoch, value)
        (trial_dir / "done.json").write_text(json.dumps(params))
        return value

    return trial_fn


def fake_worker(
    out: str,
    storage: str,
    study: str,
    trials: int,
    epochs: int,
    sleep_s: float,
    seed: int,
    barrier_n: int = 0,
    heartbeat_s: int = 30,
) -> None:
    """One `amoseg tune` worker with the fake trial function (spawned process target)."""
    config = TuneConfig(
        model="fake",
        out=Path(out),
        trials=trials,
        storage=storage,
        study_name=study,
        epochs=epochs,
        seed=seed,
        pruner="none",
        heartbeat_s=heartbeat_s,
        grace_s=2 * heartbeat_s,
    )
    barrier = (Path(out), barrier_n) if barrier_n else None
    run_study(config, make_fake(epochs, sleep_s, barrier), poll_s=0.2)


def start_workers(n: int, **kwargs) -> list:
    procs = [
        SPAWN.Process(target=fake_worker, kwargs={**kwargs, "seed": i}, daemon=True)
        for i in range(n)
    ]
    for p in procs:
        p.start()
    return procs


def join_all(procs: list, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "workers did not finish in time"
    assert [p.exitcode for p in procs] == [0] * len(procs)


def check_shared_study(storage: str, study_name: str, out: Path, trials: int, workers: int):
    """The study has exactly `trials` finished trials, unique numbers, work from every worker."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    counted = [t for t in study.trials if not t.user_attrs.get("amoseg_surplus")]
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert [t.state for t in counted] == [TrialState.COMPLETE] * trials
    assert len({t.user_attrs["worker"] for t in counted}) == workers
    for t in counted:  # each trial trained into its own folder
        done = json.loads((out / "trials" / f"trial_{t.number:04d}" / "done.json").read_text())
        assert done == {k: t.params[k] for k in PARAM_NAMES}
        assert t.value == pytest.approx(fake_score(t.params, 1))
    return study


# ---------------------------------------------------------------- search space


def test_default_space_is_the_reports(tmp_path):
    space = load_space(None)
    assert space["lr"] == {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}
    assert space["weight_decay"] == {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}
    assert space["batch_size"] == {"type": "categorical", "choices": [2, 4, 8, 16]}


def test_space_file_overrides_and_fixes(tmp_path):
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text("lr: {low: 1e-4, high: 1e-3}\nbatch_size: [4, 8]\n")
    space = load_space(yaml_file)
    assert space["lr"] == {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}
    assert space["batch_size"] == {"type": "categorical", "choices": [4, 8]}
    assert space["weight_decay"]["low"] == 1e-6  # untouched default
    json_file = tmp_path / "space.json"
    json_file.write_text(json.dumps({"weight_decay": 0.0001, "batch_size": {"choices": [2]}}))
    space = load_space(json_file)
    assert space["weight_decay"] == {"type": "fixed", "value": 1e-4}
    assert space["batch_size"] == {"type": "categorical", "choices": [2]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: {low: 1e-4, high: 1e-3}\nmomentum: [0.9]\n", "unknown key(s) momentum"),
        ("lr: {min: 1e-4}\n", "unknown key(s) min under 'lr'"),
        ("lr: {low: 1e-2, high: 1e-4}\n", "must be below high"),
        ("batch_size: [4, -2]\n", "positive integers"),
        ("- lr\n", "must be a mapping"),
        ("lr: {low: [\n", "not valid YAML"),
    ],
)
def test_bad_space_file_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(AmosegError) as info:
        load_space(path)
    assert message in str(info.value)
    if "unknown key(s) momentum" in message:
        assert "allowed keys for unet: lr, weight_decay, batch_size" in str(info.value)


# ---------------------------------------------------------------- one worker, outputs


def test_single_worker_study_outputs(tmp_path):
    config = TuneConfig(model="fake", out=tmp_path, trials=5, epochs=2, seed=1, pruner="none")
    messages: list[str] = []
    study = run_study(config, make_fake(epochs=2), log=messages.append)
    assert (tmp_path / "study.db").exists()  # default storage: SQLite in OUT
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 5
    assert any("trial 4 complete" in m for m in messages)

    best = best_params(study, config.space, "miou")
    assert set(best) == {"lr", "weight_decay", "batch_size", "value", "metric", "trial"}
    top = max(complete, key=lambda t: t.value)
    assert best["trial"] == top.number
    assert best["value"] == pytest.approx(top.value)
    assert (best["lr"], best["weight_decay"], best["batch_size"]) == (
        top.params["lr"],
        top.params["weight_decay"],
        top.params["batch_size"],
    )
    path = write_best_params(tmp_path, best)
    assert json.loads(path.read_text()) == best

    png = plot_history(study, tmp_path / "history.png", "miou")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from rich.console import Console

    console = Console(record=True, width=140)
    console.print(trials_table(study, "miou"))
    text = console.export_text()
    assert f"{top.value:.4f}" in text and "5 complete" in text

    # Running again with the same --out joins the study: it already has 5 trials, runs none.
    again = run_study(config, make_fake(epochs=2))
    assert len(again.trials) == 5


def test_trial_started_by_a_race_stands_down(tmp_path, monkeypatch):
    """Two workers that both saw room for the last trial: the later one is marked surplus,
    samples nothing and is not counted, so the study ends with exactly --trials trials."""
    from amoseg.tuning import study as study_module

    config = TuneConfig(model="fake", out=tmp_path, trials=3, epochs=1, seed=0, pruner="none")
    run_study(config, make_fake(epochs=1))
    real_tally, calls = study_module._tally, []

    def stale_tally(study):  # the first look predates another worker's last trial
        calls.append(1)
        return (2, 0) if len(calls) == 1 else real_tally(study)

    monkeypatch.setattr(study_module, "_tally", stale_tally)
    ran: list[int] = []
    study = run_study(config, lambda p, d, r: ran.append(1) or 0.5)
    assert not ran  # the surplus trial never trained
    extra = study.trials[-1]
    assert extra.number == 3 and extra.state.name == "PRUNED" and extra.params == {}
    assert extra.user_attrs["amoseg_surplus"] is True
    assert real_tally(study) == (3, 0)
    assert best_params(study, config.space, "miou")["trial"] != 3


def test_median_pruner_stops_poor_trials(tmp_path):
    def trial_fn(params, trial_dir, report):
        # Poor learning rates look poor from the first epoch on, as in real training.
        value = 0.0
        for epoch in range(4):
            value = fake_score(params, epoch)
            report(epoch, value)
        return value

    config = TuneConfig(model="fake", out=tmp_path, trials=8, epochs=4, seed=3, pruner="median")
    study = run_study(config, trial_fn)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, "no trial was pruned"
    for t in pruned:
        assert 2 <= len(t.intermediate_values) < 4  # warm-up epoch, then stopped early
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) == 8


def test_hyperband_pruner_runs(tmp_path):
    config = TuneConfig(model="fake", out=tmp_path, trials=4, epochs=3, seed=0, pruner="hyperband")
    study = run_study(config, make_fake(epochs=3))
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) == 4


# ---------------------------------------------------------------- several workers, SQLite


@pytest.mark.parametrize("companion", ["", ".lock", "-journal"])
def test_a_second_worker_accepts_the_first_workers_database(tmp_path, companion):
    """Two workers started together: the second checks --out after the first created its
    SQLite file (or only the lock beside it) but before any tune marker exists."""
    from amoseg.tuning.study import check_tune_folder

    (tmp_path / f"shared.db{companion}").touch()
    check_tune_folder(tmp_path, sqlite_url(tmp_path / "shared.db"))
    with pytest.raises(AmosegError, match="not a tune folder"):  # someone else's database
        check_tune_folder(tmp_path, sqlite_url(tmp_path / "other.db"))
    (tmp_path / "notes.txt").touch()
    with pytest.raises(AmosegError, match="not a tune folder"):
        check_tune_folder(tmp_path, sqlite_url(tmp_path / "shared.db"))


def test_two_workers_share_a_sqlite_study(tmp_path):
    storage = sqlite_url(tmp_path / "shared.db")
    procs = start_workers(
        2,
        out=str(tmp_path),
        storage=storage,
        study="shared",
        trials=7,
        epochs=2,
        sleep_s=0.05,
        barrier_n=2,
    )
    join_all(procs)
    check_shared_study(storage, "shared", tmp_path, trials=7, workers=2)


def test_killed_worker_trial_fails_and_others_finish(tmp_path):
    """SIGKILL one worker mid-trial: its trial turns FAILED via the heartbeat, another
    worker replaces it and the study reaches its trial count."""
    import optuna
    from optuna.trial import TrialState

    storage = sqlite_url(tmp_path / "study.db")
    common = {"storage": storage, "study": "kill", "trials": 3, "epochs": 2, "heartbeat_s": 1}
    victim_out = tmp_path / "victim"
    (victim) = start_workers(1, out=str(victim_out), sleep_s=30.0, **common)[0]
    deadline = time.monotonic() + 60
    while not list(victim_out.glob("trials/*/started")) and time.monotonic() < deadline:
        assert victim.is_alive()
        time.sleep(0.1)
    time.sleep(1.5)  # let the heartbeat thread record a beat
    victim.kill()  # SIGKILL: no clean-up, the trial stays RUNNING in the database
    victim.join(10)

    start = time.monotonic()
    fake_worker(out=str(tmp_path / "survivor"), sleep_s=0.0, seed=9, **common)
    assert time.monotonic() - start < 30

    study = optuna.load_study(study_name="kill", storage=open_storage(storage))
    states = {t.number: t.state for t in study.trials}
    assert states[0] == TrialState.FAIL  # the killed worker's trial
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 3
    assert not any(s == TrialState.RUNNING for s in states.values())


# ---------------------------------------------------------------- bad input


def write_tiny_store(root: Path, cases: int = 3, slices: int = 4, size: int = 32) -> Path:
    """A prepared store with organ blobs: enough for a 1-epoch training run."""
    from tests.tiny_store import store_from_slices

    rng = np.random.default_rng(0)
    ids = [f"amos_{i:04d}" for i in range(cases)]
    yy, xx = np.mgrid[:size, :size]
    made = {}
    for n, case in enumerate(ids):
        label = np.zeros((slices, size, size), np.uint8)
        for z in range(slices):
            cy, cx = 10 + n + z, 12 + 2 * n
            label[z][(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = 1  # spleen-ish disc
            label[z][(yy - 20) ** 2 + (xx - 22 + z) ** 2 < 20] = 6  # liver-ish disc
        image = (-800 + 900 * (label > 0) + rng.normal(0, 20, label.shape)).astype(np.int16)
        made[case] = (image, label)
    splits = {"train": ids[:1], "val": ids[1:2], "test": ids[2:]}
    return store_from_slices(root, made, splits, source="synthetic test store")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    return write_tiny_store(tmp_path_factory.mktemp("store"))


def run_main(args: list[str], capsys) -> tuple[int, str]:
    from amoseg.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code), capsys.readouterr().err


def test_unreachable_storage_is_one_line_and_fast(tmp_path, tiny_store):
    args = ["tune", "unet", "--data", str(tiny_store), "--trials", "2", "--out", str(tmp_path)]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "amoseg", *args, "--storage", "postgresql://127.0.0.1:1/x"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open study storage"), lines
    assert "postgresql://127.0.0.1:1/x" in lines[0]
    assert time.monotonic() - start < 60


def test_malformed_storage_url(tmp_path, tiny_store, capsys):
    code, err = run_main(
        ["tune", "unet", "--data", str(tiny_store), "--out", str(tmp_path), "--storage", "nope"],
        capsys,
    )
    assert code == 2
    assert "unsupported storage URL 'nope'" in err and "Traceback" not in err


def test_study_with_other_space_is_refused(tmp_path, tiny_store, capsys):
    storage = sqlite_url(tmp_path / "study.db")
    config = TuneConfig(model="unet", out=tmp_path, trials=1, storage=storage, study_name="s")
    run_study(config, make_fake(epochs=1))  # the study exists with the default space

    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-4, high: 1.0e-3}\n")
    base = ["tune", "unet", "--data", str(tiny_store), "--out", str(tmp_path)]
    base += ["--storage", storage, "--study", "s", "--epochs", "10"]
    code, err = run_main([*base, "--space", str(space)], capsys)
    assert code == 2
    assert "study 's' already exists with a different search space" in err
    assert "lr log-uniform 1e-05…0.01" in err  # what the study searches
    assert len(err.strip().splitlines()) == 1

    code, err = run_main([*base[:-1], "3"], capsys)  # same space, other --epochs
    assert code == 2 and "different number of epochs" in err

    # The same set-up joins fine (no exception): the check compares, it does not just refuse.
    assert open_study(config).study_name == "s"


def test_unknown_space_keys_via_cli(tmp_path, tiny_store, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"low": 1e-4, "high": 1e-3}, "dropout": [0.1]}))
    code, err = run_main(
        ["tune", "unet", "--data", str(tiny_store), "--out", str(tmp_path), "--space", str(space)],
        capsys,
    )
    assert code == 2
    assert (
        "unknown key(s) dropout" in err
        and "allowed keys for unet: lr, weight_decay, batch_size" in err
    )


def test_not_a_store_is_refused(tmp_path, capsys):
    code, err = run_main(["tune", "unet", "--data", str(tmp_path), "--out", str(tmp_path)], capsys)
    assert code == 2 and "not a prepared slice store" in err


# ---------------------------------------------------------------- real training


def test_real_training_tune_then_train_with_params(tmp_path, tiny_store, capsys):
    """Two real trials of a small model, then `amoseg train --params best_params.json`."""
    import optuna

    from amoseg.cli.main import main

    out = tmp_path / "tune"
    args = ["--data", str(tiny_store), "--trials", "2", "--epochs", "2", "--out", str(out)]
    main(["tune", "logreg-pixel", *args, "--pruner", "none", "--seed", "0", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "top trials by miou" in printed and "best trial" in printed

    study = optuna.load_study(
        study_name="amoseg-logreg-pixel", storage=sqlite_url(out / "study.db")
    )
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2
    for t in done:  # each trial is a full run folder trained with the trial's parameters
        run = out / "trials" / f"trial_{t.number:04d}"
        settings = json.loads((run / "config.json").read_text())["settings"]
        assert settings["lr"] == pytest.approx(t.params["lr"])
        assert settings["weight_decay"] == pytest.approx(t.params["weight_decay"])
        assert settings["batch_size"] == t.params["batch_size"] and settings["epochs"] == 2
        summary = json.loads((run / "summary.json").read_text())
        assert t.value == pytest.approx(summary["best_val_miou"])
        assert len(t.intermediate_values) == 2  # one report per epoch
        assert 0.0 <= t.value <= 1.0

    best = json.loads((out / "best_params.json").read_text())
    top = max(done, key=lambda t: t.value)
    assert best["trial"] == top.number and best["metric"] == "miou"
    assert (out / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"

    run = tmp_path / "final"
    args = ["--data", str(tiny_store), "--out", str(run), "--epochs", "1", "--device", "cpu"]
    main(
        [
            "train",
            "logreg-pixel",
            *args,
            "--workers",
            "0",
            "--params",
            str(out / "best_params.json"),
        ]
    )
    settings = json.loads((run / "config.json").read_text())["settings"]
    assert settings["lr"] == pytest.approx(best["lr"])
    assert settings["weight_decay"] == pytest.approx(best["weight_decay"])
    assert settings["batch_size"] == best["batch_size"]
