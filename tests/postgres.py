"""A throwaway PostgreSQL server for tests: ``postgres`` (one per session and xdist worker) and
``postgres_url`` (a fresh database on it for each test).

Debian's binaries (scripts/postgres.sh finds or installs them). initdb and postgres refuse to run as
root, so as root they run as the ``postgres`` system user, in a temp dir it owns; the socket stays in
that dir and the server listens on a free port on 127.0.0.1 only, with trust auth for user ``letl``.
Without the binaries the tests that need it fail, saying how to install them.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

# Debian's, newest major first, then wherever symlinks put initdb.
BIN_DIRS = (*sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda d: -int(d.parent.name)),
            Path("/usr/local/bin"), Path("/usr/bin"))
USER = "letl"


def pg_bin() -> Path | None:
    return next((d for d in BIN_DIRS if (d / "initdb").exists() and (d / "pg_ctl").exists()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    bin: Path
    root: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, text=True)

    def start(self) -> None:
        data = self.root / "data"
        self.run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync")
        options = f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")


def _unavailable(reason: str):
    pytest.fail(f"{reason}: run scripts/postgres.sh (apt-get install postgresql)")


@pytest.fixture(scope="session")
def postgres():
    found = pg_bin()
    if found is None:
        _unavailable(f"no initdb/pg_ctl in {', '.join(map(str, BIN_DIRS))}")
    root = Path(tempfile.mkdtemp(prefix="letl-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = Server(found, root, _free_port())
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        log = root / "log"
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"postgres did not start: {exc.stderr.strip()} {log}") from exc
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres) -> str:
    """A database of its own on the session's server, for one test."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return postgres.url(name)
