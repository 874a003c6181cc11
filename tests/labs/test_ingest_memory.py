"""The lab ingest in bounded memory: DuckDB's limit comes from LETL_DUCKDB_MEMORY and the machine,
and a drop far larger than that limit still ingests and reconciles, since nothing sorts or joins."""

import duckdb
import pyarrow.parquet as pq
import pytest

from letl.labs import ingest
from letl.labs.drops import find_drops
from letl.labs.sample import write_drop
from letl.lake.config import parse_size

MONTH = "2024-05"


def test_a_400k_row_drop_ingests_under_a_64mb_duckdb_limit(tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    gens = [write_drop(landing / "labs" / h / f"{MONTH}.csv", hospital_id=h, month=MONTH, rows=200_000, seed=i)
            for i, h in enumerate(("H001", "H002"))]
    monkeypatch.setenv(ingest.MEMORY_VARIABLE, "64MB")
    configs, connect = [], duckdb.connect

    def recording(*args, config=None, **kwargs):
        configs.append(dict(config or {}))
        return connect(*args, config=config, **kwargs)

    monkeypatch.setattr(ingest.duckdb, "connect", recording)
    out = tmp_path / "out"
    out.mkdir()
    report = ingest.ingest_drops(find_drops(landing, MONTH), out / "good.parquet", out / "rejects.parquet", b"k", out,
                                 log=lambda _: None)

    assert [c["memory_limit"] for c in configs] == [f"{parse_size('64MB') >> 20}MiB"]
    written = pq.read_metadata(out / "good.parquet").num_rows, pq.read_metadata(out / "rejects.parquet").num_rows
    assert report.rows_in == 400_000 == sum(written) and written == (report.rows_out, report.rows_rejected)
    assert report.lines_in == report.header_lines + report.rows_in == 400_002
    expected = {}
    for gen in gens:
        for reason, n in gen.defects.items():
            expected[reason] = expected.get(reason, 0) + n
    assert report.reasons == expected
    # Files follow each other in drop order, each in its own order: no sort brought them together.
    sources = pq.read_table(out / "good.parquet", columns=["source_file"]).column(0).to_pylist()
    assert sources == sorted(sources) and len(set(sources)) == 2
    lines = pq.read_table(out / "rejects.parquet", columns=["source_file", "line"]).to_pylist()
    assert lines == sorted(lines, key=lambda r: (r["source_file"], r["line"]))


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake cgroup and /proc/meminfo: set(memory_max, memory_current, mem_available)."""
    cgroup, meminfo = tmp_path / "cgroup", tmp_path / "meminfo"
    cgroup.mkdir()
    monkeypatch.setattr(ingest, "CGROUP", cgroup)
    monkeypatch.setattr(ingest, "MEMINFO", meminfo)
    monkeypatch.delenv(ingest.MEMORY_VARIABLE, raising=False)

    def set_(memory_max: str, current: int, available: int) -> None:
        (cgroup / "memory.max").write_text(f"{memory_max}\n")
        (cgroup / "memory.current").write_text(f"{current}\n")
        meminfo.write_text(f"MemTotal:       24000000 kB\nMemAvailable: {available >> 10:>12} kB\n")

    return set_


def mib(size: str | int) -> str:
    return f"{parse_size(size) >> 20}MiB"


def test_the_limit_is_the_variable_capped_by_half_the_memory_the_machine_has_left(machine, monkeypatch):
    machine("max", 0, 16 << 30)
    assert ingest.duckdb_memory_limit() == mib(ingest.DEFAULT_MEMORY)  # unset: the default
    monkeypatch.setenv(ingest.MEMORY_VARIABLE, "300MB")
    assert ingest.duckdb_memory_limit() == mib("300MB")
    monkeypatch.setenv(ingest.MEMORY_VARIABLE, "2GiB")
    machine("max", 0, 3 << 30)  # the host has 3 GiB left: half of it
    assert ingest.duckdb_memory_limit() == mib(3 << 29)
    machine(str(1 << 30), 400 << 20, 16 << 30)  # the cgroup has 624 MiB left of its 1 GiB
    assert ingest.duckdb_memory_limit() == "312MiB"
    monkeypatch.setenv(ingest.MEMORY_VARIABLE, "0")  # as much as the machine allows
    assert ingest.duckdb_memory_limit() == "312MiB"
    monkeypatch.setenv(ingest.MEMORY_VARIABLE, "1MB")  # too little to write a row group: the floor
    assert ingest.duckdb_memory_limit() == mib(ingest.MIN_MEMORY)
    monkeypatch.setenv(ingest.MEMORY_VARIABLE, "lots")
    with pytest.raises(ValueError, match="not a size"):
        ingest.duckdb_memory_limit()


def test_the_limit_reads_the_real_machine(monkeypatch):
    monkeypatch.setenv(ingest.MEMORY_VARIABLE, "64MB")
    assert 0 < ingest.available_memory()
    assert ingest.duckdb_memory_limit() == mib("64MB")
