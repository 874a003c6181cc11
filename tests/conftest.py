"""Shared fixtures: every test gets its own LETL_HOME, landing zone, tiers and Dagster home.

A lake that many tests read (the lab lake) is built once per run and copied into each test's
directories: the catalog holds tier names and keys, never paths, so a copy is a whole lake.
"""

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from postgres import postgres, postgres_url  # noqa: F401  (fixtures: a throwaway Postgres server)

from letl.lake.lake import Lake

LAKE_DIRS = ("home", "landing", "pmem", "dagster_home")


def _lake_env(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    paths = {"home": root / "home", "landing": root / "landing", "pmem": root / "pmem", "dagster_home": root / "dagster"}
    for path in paths.values():
        path.mkdir(parents=True)
    (paths["dagster_home"] / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("LETL_HOME", str(paths["home"]))
    monkeypatch.setenv("LETL_LANDING", str(paths["landing"]))
    monkeypatch.setenv("LETL_TIER_PMEM_PATH", str(paths["pmem"]))
    monkeypatch.setenv("DAGSTER_HOME", str(paths["dagster_home"]))
    monkeypatch.setenv("LETL_PSEUDONYM_KEY", "test-key-not-secret")
    monkeypatch.setenv("LETL_OBJECTSTORE", "off")  # `letl run` in a test must not leave a server behind
    for name in ("LETL_BRANCH", "LETL_CATALOG_URL", "LETL_TIER_SSD_PATH", "LETL_TIER_HDD_PATH", "LETL_TIERS_FILE",
                 "LETL_TIER_PMEM_QUOTA", "LETL_TIER_SSD_QUOTA", "LETL_TIER_HDD_QUOTA", "LETL_PSEUDONYM_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    return paths


@pytest.fixture
def letl_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    return _lake_env(tmp_path, monkeypatch)


@pytest.fixture
def lake(letl_env) -> Lake:
    return Lake.from_env()


def _built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[dict[str, Path]], None]) -> Path:
    """The directories of a lake that `build` makes in its own environment, made once per run.

    pytest-xdist workers share the run's base temp dir, so the first worker builds under a lock
    and the others wait for it and reuse the result.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    shared = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.getbasetemp()
    root, done = shared / f"built-{name}", shared / f"built-{name}.done"
    with open(shared / f"built-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that failed halfway
            with pytest.MonkeyPatch.context() as monkeypatch:
                build(_lake_env(root, monkeypatch))
            done.touch()
    return root


def _copy_lake(template: Path, letl_env: dict[str, Path]) -> Lake:
    # copytree keeps mtimes, which the drops' signatures in the catalog depend on.
    for name, src in zip(LAKE_DIRS, ("home", "landing", "pmem", "dagster"), strict=True):
        shutil.copytree(template / src, letl_env[name], dirs_exist_ok=True)
    return Lake.from_env()


def _build_lab_lake(env: dict[str, Path]) -> None:
    from letl.labs.sample import generate_drops
    from letl_assets.local_run import run_months

    generate_drops(env["landing"], months=3, hospitals=3, rows_per_file=400, seed=5)
    outcomes = run_months(None, force=False, log=lambda _line: None)
    assert [o["status"] for o in outcomes] == ["ok", "ok", "ok"], outcomes


@pytest.fixture(scope="session")
def built_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[dict[str, Path]], None]], Path]:
    """`built_once(name, build)`: the directories of the lake `build(env)` makes, built once per run."""
    return lambda name, build: _built_once(tmp_path_factory, name, build)


@pytest.fixture
def copy_lake(letl_env) -> Callable[[Path], Lake]:
    """`copy_lake(template)`: this test's own copy of a lake from `built_once`."""
    return lambda template: _copy_lake(template, letl_env)


@pytest.fixture(scope="session")
def lab_lake_template(built_once) -> Path:
    return built_once("lab-lake", _build_lab_lake)


@pytest.fixture
def lab_lake(lab_lake_template: Path, copy_lake) -> Lake:
    """Three months of sample drops from three hospitals, through the real labs_job (a copy of one build)."""
    return copy_lake(lab_lake_template)


@pytest.fixture(scope="module")
def module_lab_lake(lab_lake_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """One copy of the lab lake for a whole module, its environment set while the module runs.

    For tests that only read the lake, such as those sharing one server over it; a test's own
    monkeypatched variables still apply on top and are undone after it.
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _copy_lake(lab_lake_template, _lake_env(tmp_path_factory.mktemp("module-lab-lake"), monkeypatch))


@pytest.fixture(scope="session")
def objectstore(tmp_path_factory: pytest.TempPathFactory):
    """One real SeaweedFS S3 server for the whole session (one per xdist worker), on its own LETL_HOME."""
    from letl.devstore import server as store

    home = tmp_path_factory.mktemp("objectstore") / "home"
    info = store.up(home)
    yield info
    store.down(home)


@pytest.fixture
def s3_backend(objectstore):
    """An S3Backend on a prefix no other test uses."""
    import uuid

    from letl.devstore.server import client_for
    from letl.storage.s3 import S3Backend

    return S3Backend(client_for(objectstore), objectstore.bucket, prefix=f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def object_tier(monkeypatch: pytest.MonkeyPatch):
    """Points the lake's 'cortx' tier at a SeaweedFS (``objectstore``'s info), on a prefix of its own or the one given."""
    import uuid

    def point(info, prefix: str | None = None):
        monkeypatch.setenv("LETL_S3_ENDPOINT", info.endpoint)
        monkeypatch.setenv("LETL_S3_ACCESS_KEY_ID", info.access_key)
        monkeypatch.setenv("LETL_S3_SECRET_ACCESS_KEY", info.secret_key)
        monkeypatch.setenv("LETL_TIER_CORTX_PATH", f"s3://{info.bucket}/{prefix or uuid.uuid4().hex[:12]}")
        return info

    return point


@pytest.fixture
def s3_retries_without_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore still makes every retry to an unreachable endpoint, in this process, without the
    seconds of jittered backoff between them that a test of what the failure leaves behind only waits out."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda _self, _context: 0)


@pytest.fixture
def disk_dir():
    """A directory outside /dev (make test may put tmp_path on /dev/shm): for a file on another
    filesystem than /dev/shm, or one that is not in a system directory."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="letl-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
