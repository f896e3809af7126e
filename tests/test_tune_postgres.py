"""`amoseg tune` across machines: workers sharing one study on a real PostgreSQL server.

The server is started for this module from Debian's `postgresql` binaries (tests/pg_server.py).
Without them the tests skip locally with the reason; in CI (env CI set) they fail instead,
because the multi-machine path must be tested there.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from amoseg.tuning import open_storage
from tests.pg_server import PostgresServer, ServerUnavailable
from tests.test_tune import check_shared_study, join_all, start_workers


@pytest.fixture(scope="module")
def postgres():
    server = None
    try:
        server = PostgresServer()
        server.start()
    except (ServerUnavailable, OSError, ImportError, subprocess.SubprocessError) as exc:
        if server is not None:
            server.stop()
        server_error = f"cannot start a PostgreSQL server for the tuning tests: {exc}"
        if os.environ.get("CI"):
            pytest.fail(server_error + " (CI must run these: install Debian's postgresql)")
        pytest.skip(server_error)
    try:
        yield server
    finally:
        server.stop()


def test_two_workers_share_a_postgres_study(postgres, tmp_path):
    procs = start_workers(
        2,
        out=str(tmp_path),
        storage=postgres.url,
        study="pg-shared",
        trials=7,
        epochs=2,
        sleep_s=0.05,
        barrier_n=2,
    )
    join_all(procs)
    check_shared_study(postgres.url, "pg-shared", tmp_path, trials=7, workers=2)


def test_postgres_killed_worker_is_replaced(postgres, tmp_path):
    """The heartbeat path on PostgreSQL: a SIGKILLed worker's trial turns FAILED and a worker
    on another 'machine' (its own output folder) completes the study."""
    import optuna
    from optuna.trial import TrialState

    from tests.test_tune import fake_worker

    common = {"storage": postgres.url, "study": "pg-kill", "trials": 2, "epochs": 2}
    victim_out = tmp_path / "machine_a"
    victim = start_workers(1, out=str(victim_out), sleep_s=30.0, heartbeat_s=1, **common)[0]
    deadline = time.monotonic() + 60
    while not list(victim_out.glob("trials/*/started")) and time.monotonic() < deadline:
        assert victim.is_alive()
        time.sleep(0.1)
    time.sleep(1.5)
    victim.kill()
    victim.join(10)

    fake_worker(out=str(tmp_path / "machine_b"), sleep_s=0.0, seed=5, heartbeat_s=1, **common)
    study = optuna.load_study(study_name="pg-kill", storage=open_storage(postgres.url))
    states = [t.state for t in sorted(study.trials, key=lambda t: t.number)]
    assert states[0] == TrialState.FAIL
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states
