"""The explorer's and ``letl sql``'s views carry partition_key for every partition name the lake takes,
'/' and '=' included: each is one percent-encoded Hive directory that DuckDB decodes."""

import pandas as pd
import pytest

from letl.query.service import Explorer
from letl.query.views import snapshot

DEID = {"dataset": {"access": "deidentified"}}
NAMES = ["2024", "a=b", "x/y"]


@pytest.fixture
def parts(lake):
    for i, name in enumerate(NAMES):
        lake.write_version("test/parts", pd.DataFrame({"a": [i]}), partition=name, metadata=DEID)
    return lake


@pytest.fixture
def ex(parts):
    service = Explorer(parts, "analyst")
    yield service
    service.close()


def test_the_view_has_the_real_partition_names(ex):
    rows = ex.run("SELECT partition_key, a FROM parts ORDER BY a").table.to_pylist()
    assert rows == [{"partition_key": name, "a": i} for i, name in enumerate(NAMES)]


def test_a_filter_on_a_name_with_a_slash_reads_only_its_file(ex):
    assert ex.run("SELECT a FROM parts WHERE partition_key = 'x/y'").table.to_pylist() == [{"a": 2}]
    plan = ex.con.cursor().sql("EXPLAIN ANALYZE SELECT count(*) FROM parts WHERE partition_key = 'a=b'").fetchall()[0][1]
    assert "Total Files Read: 1" in plan


def test_each_link_is_one_encoded_directory_under_the_dataset(parts):
    from letl.query.datasets import load_datasets

    (dataset,) = [d for d in load_datasets(parts) if d.key == "test/parts"]
    view = snapshot(parts, [dataset], frozenset({"deidentified"})).views[dataset.view]
    assert view.hive
    links = parts.config.home / "explorer" / "links" / "test" / "parts"
    assert sorted(p.parent.name for p in links.glob("*/*.parquet")) == [
        "partition_key=2024", "partition_key=a%3Db", "partition_key=x%2Fy"]


def test_object_tier_versions_keep_their_partition_names(parts, objectstore, object_tier):
    from letl.lake.lake import Lake
    from letl.lake.moves import Mover

    object_tier(objectstore)
    lake = Lake.from_env()
    for name in ("a=b", "x/y"):
        assert Mover(lake).move(lake.latest("test/parts", name).version_id, "cortx", f"fg-{name}").state == "done"
    service = Explorer(lake, "analyst")
    try:
        files = service.snapshot.views["parts"].files
        assert sorted(f.rsplit("/", 2)[-2] for f in files if f.startswith("letlobj://")) == [
            "partition_key=a%3Db", "partition_key=x%2Fy"]
        rows = service.run("SELECT partition_key, a FROM parts ORDER BY a").table.to_pylist()
        assert rows == [{"partition_key": name, "a": i} for i, name in enumerate(NAMES)]
    finally:
        service.close()


def test_the_datasets_page_uris_of_such_partitions_read_their_versions(parts):
    from letl.query.datasets import history, load_datasets

    dataset = next(d for d in load_datasets(parts) if d.key == "test/parts")
    for version, uri in history(parts, dataset):
        assert pd.read_parquet(uri)["a"].tolist() == [NAMES.index(version.partition)], uri
