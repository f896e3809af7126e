"""A throwaway PostgreSQL server for tests: initdb in a temp dir, pg_ctl on a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root (CI containers) the server
runs as the `postgres` system user (created by Debian's package) via runuser/su, with its data
and socket folders owned by that user. Trust authentication on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DB_NAME = "amoseg_test"
USER = "postgres"


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server could be started here (the reason says why)."""


def find_bindir() -> Path:
    """Folder with initdb/pg_ctl: Debian's /usr/lib/postgresql/N/bin (newest) or the PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise ServerUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's `postgresql`"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """Start with `start()`, read `.url`, always `stop()` (also usable as a context manager)."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(USER)
            except KeyError as exc:
                raise ServerUnavailable(
                    "running as root and no `postgres` system user to run the server as"
                ) from exc
            self.run_as = USER
        # The server user must reach its folder: under root, avoid a private $TMPDIR.
        parent = "/tmp" if self.run_as is not None and os.path.isdir("/tmp") else None
        self.root = Path(tempfile.mkdtemp(prefix="amoseg-pg-", dir=parent))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def _cmd(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        if self.run_as is not None:
            if shutil.which("runuser"):
                args = ["runuser", "-u", self.run_as, "--", *args]
            else:
                args = ["su", self.run_as, "-s", "/bin/sh", "-c", shlex.join(args)]
        return subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )

    def _check(self, what: str, proc: subprocess.CompletedProcess) -> None:
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ServerUnavailable(
                f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]} {log}"
            )

    def start(self) -> PostgresServer:
        self.sock.mkdir()
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.root, self.sock):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._check(
            "initdb",
            self._cmd(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            ),
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._check(
            "pg_ctl start",
            self._cmd(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                timeout=90,
            ),
        )
        self._started = True
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user=USER,
                    dbname="postgres",
                    connect_timeout=5,
                )
                break
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServerUnavailable(
                        f"server started but refuses connections: {exc}"
                    ) from exc
                time.sleep(0.3)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            conn.close()

    def stop(self) -> None:
        try:
            if self._started:
                self._cmd(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                    timeout=60,
                )
                self._started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
