"""The mover's own guards: a destination lost after the switch, live requests, reused ids, old catalogs."""

import pandas as pd
import pytest
import sqlalchemy as sa

from letl.lake import moves as moves_module
from letl.lake.catalog import request_attempts
from letl.lake.errors import InProgress, VerificationFailed
from letl.lake.lake import Lake
from letl.lake.moves import MoveConflict, Mover
from letl.lake.requests import Requests


def outcomes(lake, request_id: str) -> list[str]:
    """How each attempt at a request ended (running while it runs), first attempt first."""
    a = request_attempts.c
    with lake.catalog.engine.begin() as conn:
        return list(conn.execute(sa.select(a.outcome).where(a.request_id == request_id).order_by(a.attempt)).scalars())



@pytest.fixture
def version(lake):
    return lake.write_version("labs/guard", pd.DataFrame({"a": range(3000)}), partition="2024-01-01",
                              tier_hint="pmem")


def test_destination_lost_after_the_switch_switches_back_and_keeps_the_source(lake, version, monkeypatch):
    hdd = lake.tiers["hdd"].backend

    def lose_the_copy(name):
        if name == "after_switch":
            hdd.delete(version.storage_key)

    monkeypatch.setattr(moves_module, "failpoint", lose_the_copy)
    with pytest.raises(VerificationFailed, match="switched back to pmem"):
        Mover(lake).move(version.version_id, "hdd", "guard-1")
    back = lake.catalog.get(version.version_id)
    assert back.tier == "pmem" and lake.intact(back) and lake.read_table(back).num_rows == 3000
    assert Mover(lake).get("guard-1").state == "rolled_back"
    assert outcomes(lake, "guard-1") == ["rolled_back"]


def test_a_live_request_is_never_restarted(lake, version, monkeypatch):
    monkeypatch.setenv("LETL_REQUEST_WAIT", "0")
    fresh = {"version_id": version.version_id, "src_tier": "pmem", "dst_tier": "hdd", "state": "started"}
    owner = Requests(lake).claim("busy-1", "move", {"version_id": version.version_id, "tier": "hdd"}, fresh)
    try:
        with pytest.raises(InProgress, match="busy-1") as err:
            Mover(lake).move(version.version_id, "hdd", "busy-1")
        assert err.value.retry_after > 0
        assert lake.catalog.get(version.version_id).tier == "pmem"
        assert outcomes(lake, "busy-1") == ["running"]
    finally:
        owner.release()


def test_an_id_used_for_a_write_cannot_name_a_move(lake, version, tmp_path):
    source = tmp_path / "blob.bin"
    source.write_bytes(b"bytes")
    Mover(lake).write(str(source), "team/blobs", "hdd", "shared-id")
    with pytest.raises(MoveConflict, match="was a write to team/blobs on hdd"):
        Mover(lake).move(version.version_id, "hdd", "shared-id")
    with pytest.raises(MoveConflict):
        Mover(lake).write(str(source), "team/blobs", "ssd", "shared-id")
    assert lake.catalog.get(version.version_id).tier == "pmem"


def test_a_catalog_from_before_leases_keeps_its_moves_and_can_reserve_writes(letl_env, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    lake = Lake.from_env(catalog_url=url)
    old = lake.write_version("labs/old", pd.DataFrame({"a": [1]}), tier_hint="pmem")
    lake.catalog.engine.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the moves table as older releases made it, with one finished move
        for table in ("moves", "pins", "alembic_version"):  # older releases had no migrations either
            conn.exec_driver_sql(f"DROP TABLE {table}")
        conn.exec_driver_sql(
            "CREATE TABLE moves (request_id VARCHAR(128) PRIMARY KEY, version_id VARCHAR(64) NOT NULL "
            "REFERENCES versions (version_id), src_tier VARCHAR(64) NOT NULL, dst_tier VARCHAR(64) NOT NULL, "
            "state VARCHAR(16) NOT NULL, bytes BIGINT, seconds FLOAT, detail TEXT, created_at DATETIME NOT NULL, "
            "updated_at DATETIME NOT NULL)")
        conn.exec_driver_sql(
            "INSERT INTO moves (request_id, version_id, src_tier, dst_tier, state, created_at, updated_at) "
            f"VALUES ('before', '{old.version_id}', 'ssd', 'pmem', 'done', '2024-01-01', '2024-01-01')")
    engine.dispose()

    reopened = Lake.from_env(catalog_url=url)
    first = Mover(reopened).move(old.version_id, "pmem", "before")
    assert first.repeated and (first.src_tier, first.state) == ("ssd", "done")
    with pytest.raises(MoveConflict):
        Mover(reopened).move(old.version_id, "hdd", "before")
    source = tmp_path / "new.bin"
    source.write_bytes(b"new")
    assert Mover(reopened).write(str(source), "team/new", "hdd", "after").state == "done"
