"""Object-tier Parquet versions queried by DuckDB through the letlobj:// fsspec filesystem,
against the real SeaweedFS server of the `objectstore` fixture."""

import io
import uuid

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from letl.lake.lake import Lake
from letl.lake.moves import Mover
from letl.query.objectfs import LakeObjectFileSystem, object_path
from letl.storage.posix import PosixBackend
from letl.storage.s3 import S3Backend

PARTITIONS = ["2024-01-01", "2024-02-01", "2024-03-01"]
ROWS = 20_000
COLUMNS = [f"c{j}" for j in range(8)]


@pytest.fixture
def cortx_lake(letl_env, objectstore, monkeypatch):
    monkeypatch.setenv("LETL_S3_ENDPOINT", objectstore.endpoint)
    monkeypatch.setenv("LETL_S3_ACCESS_KEY_ID", objectstore.access_key)
    monkeypatch.setenv("LETL_S3_SECRET_ACCESS_KEY", objectstore.secret_key)
    monkeypatch.setenv("LETL_TIER_CORTX_PATH", f"s3://{objectstore.bucket}/{uuid.uuid4().hex[:12]}")
    lake = Lake.from_env()
    versions = []
    for i, partition in enumerate(PARTITIONS):
        rng = np.random.default_rng(i)
        table = pa.table({"id": np.arange(ROWS) + i * ROWS, "label": [f"row-{k % 97}" for k in range(ROWS)],
                          **{name: rng.random(ROWS) for name in COLUMNS}})
        versions.append(lake.write_version("labs/wide", table, partition=partition, tier_hint="cortx",
                                           strict_tier=True))
    assert [v.tier for v in versions] == ["cortx"] * 3
    return lake, versions


def locked(lake, versions):
    con = duckdb.connect(":memory:")
    con.register_filesystem(LakeObjectFileSystem(lake=lake))
    files = ", ".join(f"'{object_path(v)}'" for v in versions)
    con.execute(f"CREATE VIEW v AS SELECT * FROM read_parquet([{files}], hive_partitioning=true)")
    con.execute("SET allowed_directories=['letlobj://']")
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")
    return con


def count_fetched(monkeypatch, backend_class):
    fetched = {"bytes": 0, "calls": 0}
    real = backend_class.read_range

    def counting(self, key, start, end):
        data = real(self, key, start, end)
        fetched["bytes"] += len(data)
        fetched["calls"] += 1
        return data

    monkeypatch.setattr(backend_class, "read_range", counting)
    return fetched


def test_object_path_names_asset_partition_and_version(cortx_lake):
    lake, versions = cortx_lake
    v = versions[1]
    assert object_path(v) == f"letlobj://labs/wide/partition_key=2024-02-01/{v.version_id}.parquet"
    flat = lake.write_version("labs/flat", pa.table({"x": [1, 2]}), tier_hint="cortx", strict_tier=True)
    assert object_path(flat) == f"letlobj://labs/flat/{flat.version_id}.parquet"
    fs = LakeObjectFileSystem(lake=lake)
    with fs.open(object_path(flat)) as f:
        assert f.read() == lake.local_path(flat).read_bytes()


def test_duckdb_reads_object_tier_versions_as_pyarrow_does(cortx_lake, monkeypatch):
    lake, versions = cortx_lake
    fetched = count_fetched(monkeypatch, S3Backend)
    con = locked(lake, versions)
    got = con.sql("SELECT * EXCLUDE (partition_key) FROM v ORDER BY id").to_arrow_table()
    expected = pa.concat_tables([lake.read_table(v) for v in versions])  # pyarrow, on local copies
    assert got.equals(expected)
    assert fetched["calls"] > 0  # through ranged reads, not the lake's local cache
    partitions = con.execute("SELECT DISTINCT CAST(partition_key AS VARCHAR) FROM v ORDER BY 1").fetchall()
    assert [p for (p,) in partitions] == PARTITIONS
    with pytest.raises(duckdb.Error):  # the lock still keeps DuckDB off the local disk
        con.execute(f"SELECT * FROM read_parquet('{lake.local_path(versions[0])}')")


def test_partition_filter_reads_one_of_three_files(cortx_lake):
    lake, versions = cortx_lake
    con = locked(lake, versions)
    query = "SELECT sum(c0), count(*) FROM v WHERE partition_key = '2024-02-01'"
    total, rows = con.execute(query).fetchone()
    assert rows == ROWS
    assert total == pytest.approx(pa.compute.sum(lake.read_table(versions[1])["c0"]).as_py())
    profile = "\n".join(row[1] for row in con.execute(f"EXPLAIN ANALYZE {query}").fetchall())
    assert "Total Files Read: 1" in profile
    assert "Scanning Files: 1/3" in profile


def test_one_column_fetches_less_than_half_the_file(cortx_lake, monkeypatch):
    lake, versions = cortx_lake
    v = versions[0]
    con = locked(lake, [v])
    fetched = count_fetched(monkeypatch, S3Backend)
    (total,) = con.execute("SELECT sum(c3) FROM v").fetchone()
    assert total == pytest.approx(pa.compute.sum(lake.read_table(v)["c3"]).as_py())
    assert 0 < fetched["bytes"] < v.bytes / 2


def test_info_ls_exists_isfile(cortx_lake):
    lake, versions = cortx_lake
    fs = LakeObjectFileSystem(lake=lake)
    path = object_path(versions[2])
    info = fs.info(path)
    assert info["size"] == versions[2].bytes == len(lake.local_path(versions[2]).read_bytes())
    assert info["type"] == "file"
    assert fs.size(path) == versions[2].bytes
    assert fs.ls(path, detail=False) == [path.removeprefix("letlobj://")]
    assert fs.exists(path) and fs.isfile(path)
    assert not fs.isdir(path)


def test_unknown_or_mislabelled_version_is_not_found(cortx_lake):
    lake, versions = cortx_lake
    fs = LakeObjectFileSystem(lake=lake)
    unknown = "letlobj://labs/wide/partition_key=2024-01-01/20240101T000000000000Z-deadbeef.parquet"
    wrong_partition = object_path(versions[0]).replace("2024-01-01", "2024-02-01")
    for path in (unknown, wrong_partition):
        with pytest.raises(FileNotFoundError):
            fs.info(path)
        with pytest.raises(FileNotFoundError):
            fs.open(path)
        assert not fs.exists(path)
    con = duckdb.connect(":memory:")
    con.register_filesystem(LakeObjectFileSystem(lake=lake))
    with pytest.raises(duckdb.IOException):
        con.execute(f"SELECT * FROM read_parquet('{unknown}')")


def test_writing_is_refused(cortx_lake):
    lake, versions = cortx_lake
    fs = LakeObjectFileSystem(lake=lake)
    with pytest.raises(PermissionError, match="read-only"):
        fs.open(object_path(versions[0]), "wb")
    con = duckdb.connect(":memory:")
    con.register_filesystem(LakeObjectFileSystem(lake=lake))
    with pytest.raises(duckdb.Error, match="read-only"):
        con.execute("COPY (SELECT 1 AS a) TO 'letlobj://labs/new/x.parquet' (FORMAT parquet)")


def test_version_moved_to_another_tier_after_lookup_is_still_read(cortx_lake):
    lake, versions = cortx_lake
    v = versions[0]
    fs = LakeObjectFileSystem(lake=lake)
    path = object_path(v)
    assert fs.info(path)["size"] == v.bytes  # the cortx record is now cached
    assert Mover(lake).move(v.version_id, "hdd", "objfs-move").state == "done"
    assert not lake.tiers["cortx"].backend.exists(v.storage_key)
    with fs.open(path) as f:
        assert f.read() == lake.local_path(lake.catalog.get(v.version_id)).read_bytes()
    assert fs.version(path).tier == "hdd"


# -- read_range on the backends ---------------------------------------------------------

@pytest.fixture(params=["posix", "s3"])
def backend(request, tmp_path):
    if request.param == "posix":
        return PosixBackend(tmp_path / "tier")
    return request.getfixturevalue("s3_backend")


@pytest.mark.parametrize("start, end, expected", [
    (0, 4, b"0123"),         # at the start
    (3, 7, b"3456"),         # in the middle
    (8, 20, b"89"),          # running past the end
    (10, 15, b""),           # starting at the end
    (12, 20, b""),           # starting past the end
    (5, 5, b""),             # empty
    (0, 10, b"0123456789"),  # the whole object
])
def test_read_range(backend, start, end, expected):
    backend.put("a/b.bin", io.BytesIO(b"0123456789"))
    assert backend.read_range("a/b.bin", start, end) == expected


def test_read_range_of_a_missing_object(backend):
    with pytest.raises(FileNotFoundError):
        backend.read_range("a/missing.bin", 0, 4)


def test_s3_read_range_is_one_ranged_get(s3_backend, monkeypatch):
    s3_backend.put("a/b.bin", io.BytesIO(b"0123456789"))
    calls = []
    real = s3_backend.client.get_object

    def recording(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(s3_backend.client, "get_object", recording)
    assert s3_backend.read_range("a/b.bin", 3, 7) == b"3456"
    assert s3_backend.read_range("a/b.bin", 5, 5) == b""
    assert [c["Range"] for c in calls] == ["bytes=3-6"]  # an empty range asks for nothing


def test_an_allow_list_keeps_other_versions_out_of_reach(cortx_lake):
    lake, versions = cortx_lake
    fs = LakeObjectFileSystem(lake=lake, allowed=frozenset({versions[0].version_id}))
    assert fs.info(object_path(versions[0]))["size"] == versions[0].bytes
    with pytest.raises(FileNotFoundError, match="not a version this connection serves"):
        fs.open(object_path(versions[1]))
    con = duckdb.connect(":memory:")
    con.register_filesystem(fs)
    assert con.execute(f"SELECT count(*) FROM read_parquet('{object_path(versions[0])}')").fetchone()[0] == ROWS
    with pytest.raises(duckdb.IOException):
        con.execute(f"SELECT count(*) FROM read_parquet('{object_path(versions[1])}')")
