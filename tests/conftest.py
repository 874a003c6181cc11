"""Shared fixtures: every test gets its own LETL_HOME, landing zone, tiers and Dagster home."""

from pathlib import Path

import pytest

from letl.lake.lake import Lake


@pytest.fixture
def letl_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    paths = {
        "home": tmp_path / "home",
        "landing": tmp_path / "landing",
        "pmem": tmp_path / "pmem",
        "dagster_home": tmp_path / "dagster",
    }
    for path in paths.values():
        path.mkdir()
    (paths["dagster_home"] / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("LETL_HOME", str(paths["home"]))
    monkeypatch.setenv("LETL_LANDING", str(paths["landing"]))
    monkeypatch.setenv("LETL_TIER_PMEM_PATH", str(paths["pmem"]))
    monkeypatch.setenv("DAGSTER_HOME", str(paths["dagster_home"]))
    monkeypatch.setenv("LETL_PSEUDONYM_KEY", "test-key-not-secret")
    monkeypatch.setenv("LETL_OBJECTSTORE", "off")  # `letl run` in a test must not leave a server behind
    for name in ("LETL_BRANCH", "LETL_CATALOG_URL", "LETL_TIER_SSD_PATH", "LETL_TIER_HDD_PATH",
                 "LETL_TIER_PMEM_QUOTA", "LETL_TIER_SSD_QUOTA", "LETL_TIER_HDD_QUOTA", "LETL_PSEUDONYM_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    return paths


@pytest.fixture
def lake(letl_env) -> Lake:
    return Lake.from_env()


@pytest.fixture(scope="session")
def objectstore(tmp_path_factory: pytest.TempPathFactory):
    """One real SeaweedFS S3 server for the whole session, on its own LETL_HOME."""
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
def lab_lake(letl_env) -> Lake:
    """Three months of sample drops from three hospitals, through the real labs_job."""
    from letl.labs.sample import generate_drops
    from letl_assets.local_run import run_months

    generate_drops(letl_env["landing"], months=3, hospitals=3, rows_per_file=400, seed=5)
    outcomes = run_months(None, force=False, log=lambda _line: None)
    assert [o["status"] for o in outcomes] == ["ok", "ok", "ok"], outcomes
    return Lake.from_env()
