"""Where a study lives: Optuna's own RDB storage (SQLite on one machine, PostgreSQL across many).

Every worker of a study opens the same URL. The storage keeps a heartbeat per running trial, so
a worker that dies mid-trial (kill -9, lost machine) leaves a trial that the other workers mark
FAILED once its heartbeat is older than the grace period, and the study stays usable.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amoseg.errors import AmosegError

CONNECT_TIMEOUT_S = 10  # a server that does not answer fails fast instead of hanging
SQLITE_BUSY_TIMEOUT_S = 60  # several local workers wait for the write lock, not fail


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def driver_url(url: str) -> str:
    """`postgresql://` with the driver that is installed.

    SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, while amoseg's `postgres` extra
    installs psycopg2; name psycopg2 explicitly when only it is present.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def _engine_kwargs(url: str) -> dict[str, Any]:
    backend = url.split(":", 1)[0].split("+", 1)[0].lower()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if backend in ("postgresql", "postgres"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    if backend == "mysql":
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    raise AmosegError(
        f"unsupported storage URL '{safe_url(url)}'",
        hint="use sqlite:///path/study.db (one machine) or "
        "postgresql://user@host:5432/dbname (several machines)",
    )


#: beside a SQLite database: open_storage's lock file and SQLite's own journals
SQLITE_COMPANIONS = (".lock", "-journal", "-wal", "-shm")


def sqlite_path(url: str | None) -> Path | None:
    """The database file of a `sqlite:///` URL; None for other backends and in-memory."""
    prefix = "sqlite:///"
    if not url or not url.startswith(prefix) or url == prefix + ":memory:":
        return None
    return Path(url[len(prefix) :])


@contextlib.contextmanager
def _local_lock(url: str) -> Iterator[None]:
    """Serialise schema creation between workers on one machine sharing a SQLite file."""
    db = sqlite_path(url)
    if db is None:
        yield
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        handle = open(db.with_name(db.name + SQLITE_COMPANIONS[0]), "a")  # noqa: SIM115 - held
    except OSError as exc:
        raise AmosegError(
            f"cannot create the study database ({exc.strerror})", db, "choose a writable --out"
        ) from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stale_trial_logger(study: Any, trial: Any) -> None:
    from rich.console import Console

    Console(stderr=True).print(
        f"[yellow]trial {trial.number} of study '{study.study_name}' marked FAILED: its worker "
        "stopped sending heartbeats (killed or lost)[/yellow]"
    )


def open_storage(url: str, *, heartbeat_s: int = 30, grace_s: int | None = None) -> Any:
    """An optuna RDBStorage with heartbeats; unreachable or malformed URLs → AmosegError."""
    import optuna
    import sqlalchemy.exc

    kwargs = _engine_kwargs(url)
    engine_url = driver_url(url)
    grace = grace_s if grace_s is not None else 3 * heartbeat_s
    last_exc: Exception | None = None
    for attempt in range(4):
        try:
            with _local_lock(url), warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    engine_url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=heartbeat_s,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=_stale_trial_logger,
                )
        except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
            raise AmosegError(
                f"no database driver for storage '{safe_url(url)}' ({exc})",
                hint="for PostgreSQL install psycopg2: pip install 'amoseg[postgres]'",
            ) from exc
        except sqlalchemy.exc.ArgumentError as exc:
            raise AmosegError(
                f"malformed storage URL '{safe_url(url)}'",
                hint="e.g. sqlite:///path/study.db or postgresql://user@host:5432/dbname",
            ) from exc
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            raise AmosegError(
                f"cannot open study storage '{safe_url(url)}' ({_first_line(exc)})",
                hint="check the URL, that the database server runs, that the database exists "
                "and accepts connections from this machine",
            ) from exc
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Two machines creating the tables at the same moment: the loser retries.
            last_exc = exc
            time.sleep(0.2 + random.random() * (attempt + 1))
        except sqlalchemy.exc.DatabaseError as exc:  # e.g. a SQLite file that is no database
            raise AmosegError(
                f"study storage '{safe_url(url)}' is not a usable database ({_first_line(exc)})",
                hint="it is damaged or another program's file; move it aside or pass another "
                "--storage / --out",
            ) from exc
    raise AmosegError(
        f"cannot initialise study storage '{safe_url(url)}' ({_first_line(last_exc)})",
        hint="retry; if it persists the database may hold a foreign schema",
    )


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__
