"""Partition names holding '/' or '=' (the lake takes both) read through gros:// by every client, with
the real name in partition_key: the Hive directory holds it percent-encoded, as the readers decode it."""

import duckdb
import fsspec
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_gros_reads import audited

import letl.gros
from letl.lake.lake import current_user
from letl.lake.uri import GrosURIError, format_uri, parse

NAMES = ["2024", "a=b", "x/y"]


@pytest.fixture
def parts(lake, monkeypatch):
    """test/parts: one partition per name, row a = its index, read as a steward (no access declared)."""
    monkeypatch.setenv("LETL_STEWARDS", current_user())
    for i, name in enumerate(NAMES):
        lake.write_version("test/parts", pd.DataFrame({"a": [i]}), partition=name)
    return lake


def by_name(table) -> dict[str, int]:
    return {r["partition_key"]: r["a"] for r in table.to_dict("records")}


EXPECTED = {name: i for i, name in enumerate(NAMES)}


def test_pandas_and_pyarrow_read_every_partition_with_its_real_name(parts):
    assert by_name(pd.read_parquet("gros://test.parts")) == EXPECTED
    table = pq.read_table("gros://test.parts", filesystem=fsspec.filesystem("gros")).to_pandas()
    assert by_name(table.astype({"partition_key": str})) == EXPECTED


def test_the_listing_names_each_partition_encoded_and_reports_the_real_name(parts):
    fs = fsspec.filesystem("gros")
    found = fs.find("gros://test.parts", detail=True)
    assert sorted(found) == ["gros://test.parts/partition_key=2024/data.parquet", "gros://test.parts/partition_key=a%3Db/data.parquet",
                             "gros://test.parts/partition_key=x%2Fy/data.parquet"]
    assert sorted(e["partition"] for e in found.values()) == sorted(NAMES)
    assert fs.info("gros://test.parts/partition_key=x%2Fy/data.parquet")["partition"] == "x/y"


@pytest.mark.parametrize("options", ["", ", hive_partitioning = true, hive_types = {'partition_key': 'VARCHAR'}"])
def test_duckdb_reads_the_partition_column_for_every_name(parts, options):
    con = duckdb.connect()
    con.register_filesystem(fsspec.filesystem("gros"))
    rows = con.sql(f"SELECT partition_key, a FROM read_parquet('gros://test.parts/*/*.parquet'{options})").fetchall()
    assert dict(rows) == EXPECTED


def test_one_partition_is_named_percent_encoded_in_the_uri(parts):
    assert pd.read_parquet("gros://test.parts?partition=x%2Fy")["a"].tolist() == [2]
    assert pd.read_parquet("gros://test.parts?partition=a%3Db")["a"].tolist() == [1]
    assert pd.read_parquet("gros://test.parts?partition=a=b")["a"].tolist() == [1]
    with pytest.raises(GrosURIError, match="%2F"):
        pd.read_parquet("gros://test.parts?partition=x/y")


def test_a_version_uri_of_such_a_partition_parses_back():
    uri = format_uri("test.parts", "main", "index", 0, "x/y")
    assert uri == "gros://test.parts/main:0?partition=x%2Fy"
    assert parse(uri).partition == "x/y"


@pytest.mark.parametrize("uri", ["gros://test.parts?partition=%", "gros://test.parts?partition=x%2", "gros://test.parts?partition=%2E%2E",
                                 "gros://test.parts?partition=x%2F", "gros://test.parts?partition=x%252Fy"])
def test_bad_escapes_in_the_partition_are_refused(uri):
    with pytest.raises(GrosURIError, match="invalid gros URI"):
        parse(uri)


@pytest.mark.parametrize("segment", ["a%2F..%2F..%2Fb", "a%00", "%FF", "%2E%2E"])
def test_a_hive_directory_decoding_to_a_bad_name_is_refused_like_a_uri(segment):
    from letl.gros.paths import split_path

    with pytest.raises(GrosURIError, match="invalid gros URI"):
        split_path(f"gros://test.parts/partition_key={segment}/data.parquet")


def test_scan_of_one_partition_has_the_partition_column_and_is_audited_once(parts):
    table = letl.gros.scan("gros://test.parts?partition=x%2Fy", lake=parts).to_table()
    assert table.to_pylist() == [{"a": 2, "partition_key": "x/y"}]
    assert audited(parts) == [parts.latest("test/parts", "x/y").version_id]


def test_scan_of_the_dataset_has_every_real_name(parts):
    assert by_name(letl.gros.scan("gros://test.parts", lake=parts).to_table().to_pandas()) == EXPECTED


@pytest.mark.parametrize("name", NAMES)
def test_scan_of_a_partitions_hive_folder_as_listed_has_its_real_name(parts, name):
    """The folder `ls` lists for a partition reads as that partition, partition_key included."""
    folder = next(e["name"] for e in fsspec.filesystem("gros").ls("gros://test.parts") if e["partition"] == name)
    assert letl.gros.scan(folder, lake=parts).to_table().to_pylist() == [{"a": EXPECTED[name], "partition_key": name}]
