"""Every common client reads the lake the way the README shows, each in a fresh interpreter as a user
runs it: pandas, pyarrow, polars and DuckDB read one partition, a tag and the whole dataset (with its
partition column). Each read must equal the catalog's versions read straight from their tier files
with pyarrow, and write one access-log row per version it read."""

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from test_gros_reads import gros_rows

from letl.lake.catalog import access_log, query_log
from letl.lake.lake import current_user
from letl.lake.uri import parse, resolve

DEID = {"dataset": {"access": "deidentified"}}
MONTHS = ["2024-01-01", "2024-02-01", "2024-03-01"]

# What the README shows for each client; URI is the gros:// URI, DIR whether it names several versions.
CLIENTS = {
    "pandas": "table = pd.read_parquet(URI)",
    "pyarrow": """
        import pyarrow.parquet as pq
        table = pq.read_table(URI, filesystem=fsspec.filesystem("gros")).to_pandas()
    """,
    "polars": """
        import polars as pl, letl.gros
        table = pl.scan_pyarrow_dataset(letl.gros.scan(URI)).collect().to_pandas()
    """,
    "duckdb": """
        import duckdb
        con = duckdb.connect()
        con.register_filesystem(fsspec.filesystem("gros"))
        path = URI + "/*" if DIR else URI  # a dataset is a directory: DuckDB reads it by a glob
        table = con.execute(f"SELECT * FROM read_parquet('{path}')").df()
        if DIR:  # DuckDB reads a Hive key that looks like a date as a DATE, as the explorer's views type it
            table["partition_key"] = table["partition_key"].dt.strftime("%Y-%m-%d")
    """,
}
READS = {  # uri, directory
    "partition": (f"gros://labs.x?partition={MONTHS[1]}", False),
    "tag": ("gros://labs.x/main:0", True),  # every partition's first version: January's old one
    "whole": ("gros://labs.x", True),
}


@pytest.fixture
def versions(lake):
    """labs/x: three months, January written twice (so that tag 0 and latest differ)."""
    lake.write_version("labs/x", pd.DataFrame({"a": [0], "label": ["old"]}), partition=MONTHS[0], metadata=DEID)
    for i, month in enumerate(MONTHS):
        lake.write_version("labs/x", pd.DataFrame({"a": [10 * i + 1, 10 * i + 2], "label": [month] * 2}),
                           partition=month, metadata=DEID)
    return lake


def client(name: str, uri: str, directory: bool) -> list[dict]:
    """Run the client's snippet in a fresh interpreter with this test's LETL_* environment."""
    code = (f"import json, os, sys\nimport pandas as pd, fsspec\nURI, DIR = {uri!r}, {directory!r}\n"
            + textwrap.dedent(CLIENTS[name])
            + "\nprint(json.dumps(table.to_dict('records'), default=str))\nsys.stdout.flush()\n"
            # pyarrow 26 may abort at interpreter shutdown after an fsspec read (test_gros_fs.run).
            + "os._exit(0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return sorted(json.loads(result.stdout.strip().splitlines()[-1]), key=lambda r: r["a"])


def direct(lake, uri: str, directory: bool) -> tuple[list[dict], list[str]]:
    """The catalog's versions for uri, read from their tier files; the partition column for a directory."""
    chosen = resolve(lake, parse(uri))
    records = []
    for version in chosen:
        for row in pq.read_table(lake.local_path(version)).to_pylist():
            records.append({**row, "partition_key": version.partition} if directory else row)
    return sorted(records, key=lambda r: r["a"]), [v.version_id for v in chosen]


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_each_client_reads_what_the_catalog_holds_and_is_audited(versions, name, read):
    uri, directory = READS[read]
    expected, chosen = direct(versions, uri, directory)
    assert len(chosen) == (1 if read == "partition" else len(MONTHS))
    assert (0 in [r["a"] for r in expected]) == (read == "tag")  # the tag really reads the old January

    got = client(name, uri, directory)
    if name == "polars" and not directory:
        # letl.gros.scan gives one partition its column too; a file read through fsspec is the stored
        # file's bytes, which hold none (README, gros://).
        expected = [{**r, "partition_key": MONTHS[1]} for r in expected]
    assert got == expected
    rows = gros_rows(versions)
    assert {r["version_id"] for r in rows} == set(chosen)
    assert {(r["user"], bool(r["host"])) for r in rows} == {(current_user(), True)}
    if name != "duckdb":  # DuckDB opens a file again after its footer read: audited again (gros_reads.py)
        assert len(rows) == len(chosen)


def refusals(lake) -> list[str]:
    with lake.catalog.engine.begin() as conn:
        return conn.execute(sa.select(query_log.c.kind, query_log.c.detail)).all()


def test_a_restricted_dataset_is_refused_to_every_client_and_each_refusal_audited(lake, monkeypatch):
    monkeypatch.delenv("LETL_STEWARDS", raising=False)
    lake.write_version("labs/secret", pd.DataFrame({"a": [1]}), partition=MONTHS[0])  # declares nothing
    for name in CLIENTS:
        before = len(refusals(lake))
        code = f"import fsspec, pandas as pd\nURI, DIR = 'gros://labs.secret', True\n{textwrap.dedent(CLIENTS[name])}"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                                timeout=300)
        assert result.returncode != 0 and "is restricted" in result.stderr, (name, result.stderr[-500:])
        assert set(refusals(lake)[before:]) == {("gros-refused", "restricted: gros://labs.secret/main")}, name
    assert gros_rows(lake) == []


def test_letl_sql_reads_the_same_rows_as_the_direct_read(versions):
    expected, chosen = direct(versions, "gros://labs.x", True)
    result = subprocess.run([sys.executable, "-m", "letl.cli.main", "sql", "--format", "json",
                             "SELECT a, label, partition_key FROM x ORDER BY a"],
                            capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected
    with versions.catalog.engine.begin() as conn:
        read = conn.execute(sa.select(access_log.c.version_id).where(access_log.c.kind == "query")).scalars().all()
    assert sorted(read) == sorted(chosen)


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_without_a_lake_each_client_is_told_how_to_point_at_it_and_nothing_is_created(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LETL_HOME", "LETL_CATALOG_URL")}
    code = f"import fsspec, pandas as pd\nURI, DIR = 'gros://labs.x', True\n{textwrap.dedent(CLIENTS[name])}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode != 0 and "set LETL_HOME to the lake's directory" in result.stderr, result.stderr[-500:]
    assert list(tmp_path.iterdir()) == []
