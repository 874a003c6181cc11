"""The gros:// fsspec protocol, used the way a notebook would: a fresh interpreter that imports
only pandas/pyarrow/duckdb/fsspec and finds the protocol through the installed entry point."""

import json
import os
import subprocess
import sys
import textwrap

import fsspec
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from letl.gros.fs import GrosFileSystem, GrosNotFoundError
from letl.lake.catalog import access_log
from letl.lake.lake import current_user
from letl.lake.uri import GrosURIError

P1, P2 = "2024-03-01", "2024-04-01"


@pytest.fixture(autouse=True)
def steward(monkeypatch):
    """The datasets here declare no access level, so they are restricted: these tests read as a
    steward. Refusals to everyone else are in test_reliability_gros.py."""
    monkeypatch.setenv("LETL_STEWARDS", current_user())


@pytest.fixture
def stocked(lake):
    """labs/x partitioned (two versions of P1, one of P2), labs/u unpartitioned, team/notes as CSV."""
    old = lake.write_version("labs/x", pd.DataFrame({"a": [0], "p": ["old"]}), partition=P1)
    p1 = lake.write_version("labs/x", pd.DataFrame({"a": [1, 2], "p": [P1, P1]}), partition=P1)
    p2 = lake.write_version("labs/x", pd.DataFrame({"a": [3], "p": [P2]}), partition=P2)
    u = lake.write_version("labs/u", pd.DataFrame({"b": [1.5, 2.5]}))
    csv = lake.staging_path(".csv")
    csv.write_text("c,d\n1,x\n2,y\n")
    notes = lake.write_version("team/notes", csv, fmt="csv")
    return {"old": old, "p1": p1, "p2": p2, "u": u, "notes": notes}


def test_dataset_written_without_pandas_metadata_reads_as_one_frame(lake):
    # DuckDB and pyarrow writers leave no pandas metadata, so pyarrow probes for _common_metadata.
    for partition, values in ((P1, [1, 2]), (P2, [3])):
        lake.write_version("labs/plain", pa.table({"a": values}), partition=partition)
    out = run("""
        df = pd.read_parquet("gros://labs.plain")
        print(json.dumps({"a": sorted(df["a"].tolist())}))
    """)
    assert out["a"] == [1, 2, 3]


def run(code: str) -> dict:
    """Run code in a fresh interpreter with the test's LETL_* environment; it prints one JSON object."""
    assert "letl" not in code  # the notebook side knows nothing of letl_assets
    prelude = "import json, os, sys\nimport pandas as pd, pyarrow as pa, fsspec\n"
    # pyarrow 26 sometimes aborts at interpreter shutdown after reading through any fsspec
    # filesystem (memory:// too): "terminate called without an active exception". The child
    # leaves with os._exit once its output is flushed, so a shutdown abort cannot make these
    # tests flaky; any error before that still fails them through the return code.
    epilogue = "\nsys.stdout.flush()\nos._exit(0)\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code) + epilogue],
        capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "letl_assets" not in result.stdout.split("\n")[0]
    return json.loads(result.stdout.strip().splitlines()[-1])


def records(code_expr: str) -> str:
    return f"print(json.dumps({code_expr}.sort_values(list({code_expr}.columns)).to_dict('records')))"


def gros_accesses(lake) -> list[dict]:
    query = sa.select(access_log).where(access_log.c.kind == "gros")
    with lake.catalog.engine.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


# --- reads in a fresh interpreter -------------------------------------------------------------


def test_read_one_partition_latest(stocked, lake):
    out = run("""
        df = pd.read_parquet("gros://labs.x:latest?partition=2024-03-01")
        print(json.dumps({"rows": df.to_dict("records")}))
    """)
    assert out["rows"] == [{"a": 1, "p": P1}, {"a": 2, "p": P1}]
    assert {a["version_id"] for a in gros_accesses(lake)} == {stocked["p1"].version_id}


def test_read_pinned_index(stocked):
    out = run("""
        df = pd.read_parquet("gros://labs.x/main:0?partition=2024-03-01")
        print(json.dumps({"rows": df.to_dict("records")}))
    """)
    assert out["rows"] == [{"a": 0, "p": "old"}]


def test_read_unpartitioned(stocked):
    out = run("""
        df = pd.read_parquet("gros://labs.u")
        print(json.dumps({"rows": df.to_dict("records")}))
    """)
    assert out["rows"] == [{"b": 1.5}, {"b": 2.5}]


@pytest.mark.parametrize("uri", ["gros://labs.x", "gros://labs.x:latest?partition=*", "gros://labs.x/main:-1"])
def test_read_all_partitions_as_a_dataset(stocked, lake, uri):
    out = run(f"""
        df = pd.read_parquet({uri!r})
        print(json.dumps({{"rows": df.sort_values("a").to_dict("records"), "columns": list(df.columns)}}))
    """)
    # the partition column comes from the Hive-style pseudo-paths (partition_key=P/data.parquet)
    assert out["columns"] == ["a", "p", "partition_key"]
    assert out["rows"] == [{"a": 1, "p": P1, "partition_key": P1}, {"a": 2, "p": P1, "partition_key": P1},
                           {"a": 3, "p": P2, "partition_key": P2}]
    read = {a["version_id"] for a in gros_accesses(lake)}
    assert read == {stocked["p1"].version_id, stocked["p2"].version_id}


def test_an_unpartitioned_dataset_as_a_directory_reads_without_a_partition_column(stocked):
    fs = GrosFileSystem(lake=None, skip_instance_cache=True)
    # beside the Hive directories, not in one: a key that is null in every file is one pyarrow cannot type
    flat = ["labs.u?partition=*/partition=_.parquet"]
    assert fs.find("labs.u?partition=*") == fs.ls("labs.u?partition=*", detail=False) == flat
    assert fs.info("labs.u?partition=*/partition=_.parquet")["version_id"] == stocked["u"].version_id
    out = run("""
        import duckdb
        df = pd.read_parquet("gros://labs.u?partition=*")
        con = duckdb.connect()
        con.register_filesystem(fsspec.filesystem("gros"))
        print(json.dumps({"pandas": df.to_dict("records"),
                          "duckdb": con.sql("select * from read_parquet('gros://labs.u?partition=*')").fetchall()}))
    """)
    assert out == {"pandas": [{"b": 1.5}, {"b": 2.5}], "duckdb": [[1.5], [2.5]]}


def test_read_csv(stocked, lake):
    out = run("""
        df = pd.read_csv("gros://team.notes:latest")
        print(json.dumps({"rows": df.to_dict("records")}))
    """)
    assert out["rows"] == [{"c": 1, "d": "x"}, {"c": 2, "d": "y"}]
    assert [a["version_id"] for a in gros_accesses(lake)] == [stocked["notes"].version_id]


def test_pyarrow_dataset_through_fsspec(stocked):
    out = run("""
        import pyarrow.dataset as ds
        fs = fsspec.filesystem("gros")
        whole = ds.dataset("gros://labs.x", filesystem=fs, format="parquet").to_table()
        files = ds.dataset("labs.x", filesystem=fs, format="parquet").files
        one = ds.dataset("labs.x:latest?partition=2024-04-01", filesystem=fs).to_table()
        print(json.dumps({"a": sorted(whole.column("a").to_pylist()), "files": files,
                          "one": one.column("a").to_pylist()}))
    """)
    assert out["a"] == [1, 2, 3]
    assert out["files"] == [f"labs.x/partition_key={P1}/data.parquet", f"labs.x/partition_key={P2}/data.parquet"]
    assert out["one"] == [3]


def test_duckdb_through_register_filesystem(stocked):
    out = run("""
        import duckdb
        con = duckdb.connect()
        con.register_filesystem(fsspec.filesystem("gros"))
        one = con.sql("select a from read_parquet('gros://labs.x:latest?partition=2024-03-01') order by a").fetchall()
        every = con.sql("select a from read_parquet('gros://labs.x/*') order by a").fetchall()
        starred = con.sql("select count(*) from read_parquet('gros://labs.x?partition=*')").fetchall()
        unpart = con.sql("select sum(b) from read_parquet('gros://labs.u')").fetchall()
        notes = con.sql("select c, d from read_csv('gros://team.notes') order by c").fetchall()
        print(json.dumps({"one": one, "every": every, "starred": starred, "unpart": unpart, "notes": notes}))
    """)
    assert out["one"] == [[1], [2]]
    assert out["every"] == [[1], [2], [3]]
    assert out["starred"] == [[3]]
    assert out["unpart"] == [[4.0]]
    assert out["notes"] == [[1, "x"], [2, "y"]]


def test_every_read_is_logged_with_user_and_host(stocked, lake):
    assert gros_accesses(lake) == []
    run("""
        pd.read_parquet("gros://labs.u:latest")
        pd.read_parquet("gros://labs.u:0")
        print(json.dumps({}))
    """)
    rows = gros_accesses(lake)
    assert len(rows) >= 2
    assert {r["version_id"] for r in rows} == {stocked["u"].version_id}
    assert all(r["user"] and r["host"] for r in rows)


# --- writes -------------------------------------------------------------------------------------


def test_write_then_read_back(stocked, lake):
    out = run("""
        pd.DataFrame({"z": [1, 2, 3], "w": ["a", "b", "c"]}).to_parquet("gros://team.my_dataset/my-branch")
        back = pd.read_parquet("gros://team.my_dataset/my-branch:latest")
        print(json.dumps({"rows": back.to_dict("records")}))
    """)
    assert out["rows"] == [{"z": 1, "w": "a"}, {"z": 2, "w": "b"}, {"z": 3, "w": "c"}]
    version = lake.latest("team/my_dataset", branch="my-branch")
    assert version is not None and version.format == "parquet" and version.rows == 3
    assert version.metadata["writer"] == "external"
    assert version.metadata["uri"] == "gros://team.my_dataset/my-branch"
    assert lake.latest("team/my_dataset", branch="main") is None
    assert lake.read_table(version).to_pandas()["z"].tolist() == [1, 2, 3]


def test_write_partition_and_csv(stocked, lake):
    run("""
        pd.DataFrame({"a": [9], "p": ["new"]}).to_parquet("gros://labs.x?partition=2024-05-01")
        pd.DataFrame({"c": [7], "d": ["z"]}).to_csv("gros://team.notes", index=False)
        print(json.dumps({}))
    """)
    new = lake.latest("labs/x", "2024-05-01")
    assert new is not None and lake.read_table(new).to_pandas()["a"].tolist() == [9]
    notes = lake.latest("team/notes")
    assert notes.version_id != stocked["notes"].version_id and notes.format == "csv"
    assert lake.local_path(notes).read_text() == "c,d\n7,z\n"


def test_failed_or_tagged_writes_leave_nothing(stocked, lake):
    out = run("""
        errors = {}
        try:
            with fsspec.open("gros://team.failing/b", "wb") as f:
                f.write(b"PAR1 half a file")
                raise RuntimeError("writer died")
        except RuntimeError as exc:
            errors["died"] = str(exc)
        try:
            with fsspec.open("gros://team.failing/b", "wb") as f:
                f.write(b"PAR1 not really parquet PAR1")
        except Exception as exc:
            errors["truncated"] = type(exc).__name__
        for uri in ("gros://team.failing:latest", "gros://team.failing:3", "gros://team.failing?partition=*"):
            try:
                pd.DataFrame({"x": [1]}).to_parquet(uri)
            except Exception as exc:
                errors[uri] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(errors))
    """)
    assert out["died"] == "writer died"
    assert out["truncated"]
    assert "PermissionError: " in out["gros://team.failing:latest"] and "tagged URI" in out["gros://team.failing:latest"]
    assert "tagged URI" in out["gros://team.failing:3"]
    assert "one partition at a time" in out["gros://team.failing?partition=*"]
    assert lake.catalog.list_versions(asset_key="team/failing") == []
    assert list(lake.config.staging.glob("*")) == [] if lake.config.staging.exists() else True


# --- errors ---------------------------------------------------------------------------------------


def test_malformed_and_unknown_uris_give_clear_errors(stocked):
    out = run("""
        errors = {}
        for uri in ("gros://../etc/passwd", "gros://labs.x?format=csv", "gros://labs%2Ex",
                    "gros://labs.x:2024-13-01", "gros://labs.nope", "gros://labs.x/nobranch",
                    "gros://labs.x:2001-01-01?partition=2024-03-01"):
            try:
                pd.read_parquet(uri)
                errors[uri] = "no error"
            except Exception as exc:
                errors[uri] = f"{type(exc).__name__}: {exc}"
        try:
            pd.read_csv("gros://labs.x/a/b")
        except Exception as exc:
            errors["csv"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(errors))
    """)
    for uri in ("gros://../etc/passwd", "gros://labs.x?format=csv", "gros://labs%2Ex", "gros://labs.x:2024-13-01"):
        assert out[uri].startswith("GrosURIError: invalid gros URI"), out[uri]
    assert "unknown query parameter 'format'" in out["gros://labs.x?format=csv"]
    assert "percent-encoded" in out["gros://labs%2Ex"]
    assert out["csv"].startswith("GrosURIError: invalid gros URI")
    assert out["gros://labs.nope"].startswith("GrosNotFoundError: ")
    assert "unknown repo 'labs.nope'" in out["gros://labs.nope"] and "labs.u, labs.x" in out["gros://labs.nope"]
    assert "no branch 'nobranch'" in out["gros://labs.x/nobranch"]
    assert "matches tag" in out["gros://labs.x:2001-01-01?partition=2024-03-01"]


# --- the filesystem in process ----------------------------------------------------------------


def test_entry_point_registers_the_protocol(letl_env):
    assert isinstance(fsspec.filesystem("gros"), GrosFileSystem)


def test_directory_listing(stocked):
    fs = GrosFileSystem(lake=None, skip_instance_cache=True)
    assert fs.isdir("gros://labs.x") and not fs.isfile("gros://labs.x")
    assert fs.isfile("gros://labs.u") and not fs.isdir("gros://labs.u")
    assert fs.isfile("gros://labs.x?partition=2024-03-01")
    dirs = [f"labs.x/partition_key={P1}", f"labs.x/partition_key={P2}"]
    files = [f"{d}/data.parquet" for d in dirs]
    # Hive-style: a directory per partition, so that every reader keeps the partition as a column
    assert fs.ls("labs.x", detail=False) == dirs
    assert fs.isdir(dirs[0]) and fs.info(dirs[0])["type"] == "directory"
    assert fs.ls(dirs[1], detail=False) == files[1:]
    # listed paths keep the caller's spelling, so they lie under the directory asked about
    assert fs.ls("gros://labs.x/", detail=False) == [f"gros://{d}" for d in dirs]
    child = fs.info(files[1])
    assert child["type"] == "file" and child["version_id"] == stocked["p2"].version_id
    assert child["size"] == stocked["p2"].bytes
    assert fs.info("gros://labs.x:0?partition=*/partition_key=2024-03-01/data.parquet")["version_id"] == stocked["old"].version_id
    assert fs.find("labs.x") == files
    assert fs.find("labs.x", withdirs=True) == sorted(["labs.x", *dirs, *files])
    assert fs.find("labs.x", maxdepth=1, withdirs=True) == ["labs.x", *dirs]
    with pytest.raises(IsADirectoryError):
        fs.open(dirs[0], "rb")
    assert fs.glob("labs.x/*") == fs.glob("labs.x/**/*.parquet") == files
    assert fs.glob("labs.x/*/*.csv") == []
    assert fs.glob("gros://labs.x?partition=*") == fs.find("gros://labs.x?partition=*")
    assert len(fs.glob("gros://labs.x?partition=*")) == 2
    assert fs.glob("labs.x?partition=2024-03-01") == ["labs.x?partition=2024-03-01"]
    assert fs.glob("labs.nope/*") == []
    assert not fs.exists("gros://labs.nope")
    assert not fs.isdir("gros://labs.nope") and not fs.isfile("labs.x?partition=nope")
    with pytest.raises(GrosURIError):
        fs.exists("gros://labs..x")
    with pytest.raises(GrosNotFoundError, match="unknown repo"):
        fs.info("gros://labs.nope")
    with pytest.raises(GrosURIError):
        fs.info("gros://labs.x/../../x")
    with pytest.raises(IsADirectoryError):
        fs.open("gros://labs.x", "rb")
    with pytest.raises(PermissionError):
        fs.rm("gros://labs.u")


def test_open_bytes_and_abandoned_writer(stocked, lake):
    fs = GrosFileSystem(skip_instance_cache=True)
    with fs.open("gros://labs.u:latest", "rb") as f:
        assert f.read() == lake.local_path(stocked["u"]).read_bytes()
    writer = fs.open("gros://team.abandoned", "wb")
    writer.write(b"c\n1\n")
    staged = writer.staged
    assert staged.exists()
    writer.discard()
    assert not staged.exists()
    assert lake.catalog.list_versions(asset_key="team/abandoned") == []
    with fs.open("gros://team.abandoned", "wb") as w:
        w.write(b"c\n1\n")
    assert w.version is not None and lake.latest("team/abandoned").version_id == w.version.version_id


def test_a_reader_without_a_lake_gets_one_line_and_creates_nothing(letl_env, tmp_path, monkeypatch):
    """Without LETL_HOME or LETL_CATALOG_URL, a reader in a directory that holds no lake is told how
    to point at one, and leaves no empty catalog behind; the default lake (./.letl) is read when it exists."""
    here = tmp_path / "notebooks"
    here.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LETL_HOME", "LETL_CATALOG_URL")}
    code = ("import pandas as pd\n"
            "try:\n    print(len(pd.read_parquet('gros://team.cohort')))\n"
            "except Exception as e:\n    print(type(e).__name__ + ': ' + str(e))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("NoLakeError: no lake here: ") and "set LETL_HOME" in done.stdout, done.stderr
    assert done.stdout.count("\n") == 1
    assert list(here.iterdir()) == []
    # A lake in ./.letl is the default: written with LETL_HOME, read without it.
    monkeypatch.setenv("LETL_HOME", str(here / ".letl"))
    pd.DataFrame({"x": [1, 2, 3]}).to_parquet("gros://team.cohort", filesystem=GrosFileSystem())
    done = subprocess.run([sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout == "3\n", done.stdout + done.stderr
