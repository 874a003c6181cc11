"""Placement errors say what is wrong: an unreachable tier is not a full one, and a lost object heals."""

import socket

import pandas as pd
import pytest

from letl.lake.errors import NoRoom, TierUnavailable
from letl.lake.lake import Lake


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cortx_down(letl_env, monkeypatch, s3_retries_without_backoff):
    """A lake whose object tier points at a port nothing listens on."""
    monkeypatch.setenv("LETL_TIER_CORTX_PATH", "s3://letl/lake")
    monkeypatch.setenv("LETL_S3_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("LETL_S3_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("LETL_S3_SECRET_ACCESS_KEY", "s")
    return Lake.from_env()


def test_an_unreachable_tier_is_reported_as_unreachable_not_full(cortx_down):
    with pytest.raises(TierUnavailable) as caught:
        cortx_down.write_version("team/x", pd.DataFrame({"a": [1]}), tier_hint="cortx", strict_tier=True)
    assert "cortx" in str(caught.value) and "room" not in str(caught.value)
    assert cortx_down.catalog.list_versions() == []


def test_a_full_tier_is_reported_as_no_room(letl_env, monkeypatch):
    monkeypatch.setenv("LETL_TIER_HDD_QUOTA", "10")
    lake = Lake.from_env()
    with pytest.raises(NoRoom) as caught:
        lake.write_version("team/x", pd.DataFrame({"a": range(100)}), tier_hint="hdd", strict_tier=True)
    assert "hdd" in str(caught.value) and "quota" in str(caught.value)


def test_full_and_unreachable_together_name_both(cortx_down, monkeypatch):
    monkeypatch.setenv("LETL_TIER_HDD_QUOTA", "10")
    lake = Lake.from_env()
    with pytest.raises(NoRoom) as caught:
        lake.write_version("team/x", pd.DataFrame({"a": range(100)}), tier_hint="hdd")
    assert "hdd" in str(caught.value) and "unreachable" in str(caught.value) and "cortx" in str(caught.value)


def test_identical_bytes_heal_a_version_whose_object_is_gone(lake):
    frame = pd.DataFrame({"a": range(10)})
    first = lake.write_version("team/x", frame, partition="p")
    assert lake.write_version("team/x", frame, partition="p") == first  # whole: reused
    lake.local_path(first).unlink()
    healed = lake.write_version("team/x", frame, partition="p")
    assert healed.version_id != first.version_id and healed.sha256 == first.sha256
    assert lake.latest("team/x", "p") == healed
    assert lake.read_table(healed).to_pandas().equals(frame)


def test_identical_bytes_heal_a_damaged_object(lake):
    frame = pd.DataFrame({"a": range(10)})
    first = lake.write_version("team/x", frame)
    path = lake.local_path(first)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    healed = lake.write_version("team/x", frame)
    assert healed.version_id != first.version_id and lake.read_table(healed).to_pandas().equals(frame)


def test_same_bytes_from_other_sources_are_a_new_version(lake):
    """A sibling output built from other drops must not be paired with a version describing older ones."""
    frame = pd.DataFrame({"a": [1]})
    first = lake.write_version("team/x", frame, metadata={"output": {"rows_in": 5}})
    second = lake.write_version("team/x", frame, metadata={"output": {"rows_in": 6}})
    assert second.version_id != first.version_id and second.metadata["output"] == {"rows_in": 6}
    assert lake.write_version("team/x", frame, metadata={"output": {"rows_in": 6}}) == second
