"""TieredIOManager: outputs become lake versions on a tier, inputs load the latest with lineage."""

import hashlib

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from letl.lake.catalog import access_log
from letl.lake.errors import InvalidInput, NoRoom
from letl_assets.resources.io_manager import ByPartition, TieredIOManager, VersionFile, VersionFiles
from letl_assets.resources.tiers import LakeResource

DF = pd.DataFrame({"x": [1, 2, 3], "name": ["a", "b", "c"]})


@dg.asset
def writer(): ...


@pytest.fixture
def lake_resource(letl_env) -> LakeResource:
    return LakeResource()


@pytest.fixture
def iom(lake_resource) -> TieredIOManager:
    return TieredIOManager(lake=lake_resource)


def output(iom, obj, asset="a", tier=None, partition=None) -> dict:
    extra = {}
    if partition:
        extra = {"partition_key": partition, "asset_partitions_def": dg.StaticPartitionsDefinition([partition])}
    context = dg.build_output_context(
        asset_key=asset, name="result", step_key=asset, run_id="run-1", op_def=writer.op,
        definition_metadata={"letl/tier": tier} if tier else {}, resources={"lake": iom.lake}, **extra,
    )
    iom.handle_output(context, obj)
    return {k: getattr(v, "value", getattr(v, "text", v)) for k, v in context.get_logged_metadata().items()}


def stored_objects(lake) -> list[str]:
    return [k for tier in lake.tiers.values() for k in tier.backend.keys()]


def test_output_lands_on_hinted_tier_with_metadata(iom, lake):
    meta = output(iom, DF, tier="hdd")
    version = lake.latest("a")
    assert version.tier == "hdd" and version.rows == 3
    path = lake.local_path(version)
    assert path.is_relative_to(lake.tiers["hdd"].spec.path)
    assert stored_objects(lake) == [version.storage_key]
    assert set(meta) == {"dagster/uri", "dagster/row_count", "dagster/column_schema", "letl/tier", "letl/version_id",
                         "letl/reused", "letl/bytes", "letl/sha256", "letl/placement", "letl/write_mib_per_s",
                         "letl/upstream_versions"}
    assert meta["letl/tier"] == "hdd"
    assert meta["dagster/uri"] == "gros://a/main:0"
    assert meta["letl/version_id"] == version.version_id
    assert meta["dagster/row_count"] == 3
    columns = meta["dagster/column_schema"].columns
    assert [(c.name, c.type, c.constraints.nullable) for c in columns] == [("x", "int64", True), ("name", "string", True)]
    assert meta["letl/bytes"] == path.stat().st_size == version.bytes
    assert meta["letl/sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == version.sha256
    assert isinstance(meta["letl/write_mib_per_s"], float) and meta["letl/placement"] == "hint"
    pd.testing.assert_frame_equal(lake.read_table(version).to_pandas(), DF)


def test_partitioned_output_records_partition(iom, lake):
    meta = output(iom, DF, asset="p", partition="2024-01")
    version = lake.latest("p", "2024-01")
    assert version.partition == "2024-01" and meta["dagster/uri"] == "gros://p/main:0?partition=2024-01"
    assert meta["dagster/partition_row_count"] == 3 and meta["dagster/row_count"] == 3
    assert lake.latest("p") is None
    other = output(iom, DF.head(2), asset="p", partition="2024-02")
    assert (other["dagster/partition_row_count"], other["dagster/row_count"]) == (2, 5)  # the table: every latest partition
    again = output(iom, DF.head(1), asset="p", partition="2024-01")  # a new latest replaces the partition's rows
    assert (again["dagster/partition_row_count"], again["dagster/row_count"]) == (1, 3)


def test_arrow_table_and_record_batch_reader(iom, lake):
    table = pa.table({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]})
    output(iom, table, asset="t")
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=1))
    output(iom, reader, asset="r")
    for asset in ("t", "r"):
        version = lake.latest(asset)
        assert version.rows == 3
        assert lake.read_table(version).equals(table)


def test_staged_parquet_path_is_consumed(iom, lake):
    staged = lake.staging_path()
    pq.write_table(pa.Table.from_pandas(DF, preserve_index=False), staged)
    meta = output(iom, staged, asset="s", tier="ssd")
    assert not staged.exists()
    version = lake.latest("s")
    assert version.tier == "ssd" and meta["letl/version_id"] == version.version_id
    pd.testing.assert_frame_equal(lake.read_table(version).to_pandas(), DF)


@pytest.mark.parametrize("bad", ["csv", "type", "tier"])
def test_bad_output_raises_and_commits_nothing(iom, lake, bad):
    if bad == "csv":
        obj = lake.staging_path(".csv")
        obj.write_text("x,y\n1,2\n")
        with pytest.raises(InvalidInput, match="not a complete Parquet file"):
            output(iom, obj)
        assert obj.exists()
    elif bad == "type":
        with pytest.raises(TypeError, match="cannot store dict"):
            output(iom, {"x": [1]})
    else:
        with pytest.raises(ValueError, match="unknown tier 'tape'"):
            output(iom, DF, tier="tape")
    assert lake.catalog.list_versions() == []
    assert stored_objects(lake) == []


def test_placement_hottest_with_room(iom, lake):
    assert output(iom, DF, asset="hot")["letl/tier"] == "pmem"
    assert lake.latest("hot").metadata["placement"] == "hottest with room"


def test_full_pmem_quota_sends_output_to_ssd(monkeypatch, letl_env):
    monkeypatch.setenv("LETL_TIER_PMEM_QUOTA", "1KB")
    iom = TieredIOManager(lake=LakeResource())
    meta = output(iom, DF, asset="cold")
    assert meta["letl/bytes"] > 1000
    assert meta["letl/tier"] == "ssd" and meta["letl/placement"] == "hottest with room"
    meta = output(iom, DF, asset="hinted", tier="pmem")
    assert meta["letl/tier"] == "ssd" and meta["letl/placement"] == "hint full, next colder"
    assert list(iom.lake.get_lake().tiers["pmem"].backend.keys()) == []


def test_failed_write_commits_nothing_and_leaves_no_staged_file(monkeypatch, letl_env):
    for tier in ("PMEM", "SSD", "HDD"):
        monkeypatch.setenv(f"LETL_TIER_{tier}_QUOTA", "1KB")
    iom = TieredIOManager(lake=LakeResource())
    with pytest.raises(NoRoom):
        output(iom, DF)
    with pytest.raises(ValueError, match="unknown tier"):
        output(iom, DF, tier="tape")
    lake = iom.lake.get_lake()
    assert lake.catalog.list_versions() == []
    assert stored_objects(lake) == []
    assert [p.name for p in lake.config.staging.iterdir()] == []


def make_graph(values):
    @dg.asset
    def up() -> pd.DataFrame:
        return pd.DataFrame({"x": values})

    @dg.asset
    def down(up: pd.DataFrame) -> pd.DataFrame:
        assert isinstance(up, pd.DataFrame)
        return up.assign(y=up.x * 2)

    @dg.asset
    def down_file(up: VersionFile) -> pa.Table:
        assert isinstance(up, VersionFile)
        return pq.read_table(up.path).append_column("z", pa.array([up.version.version_id] * up.version.rows))

    @dg.asset
    def down_table(up: pa.Table) -> pa.Table:
        assert isinstance(up, pa.Table)
        return up.slice(0, 1)

    return [up, down, down_file, down_table]


def run(assets, **kwargs):
    lake_resource = LakeResource()
    resources = {"io_manager": TieredIOManager(lake=lake_resource), "lake": lake_resource}
    return dg.materialize(assets, resources=resources, **kwargs)


def test_downstream_lineage_is_the_upstream_version_read(letl_env, lake):
    assert run(make_graph([1, 2, 3])).success
    up = lake.latest("up")
    for name in ("down", "down_file", "down_table"):
        version = lake.latest(name)
        assert [u.version_id for u in lake.catalog.upstreams(version.version_id)] == [up.version_id]
    assert {v.asset_key for v in lake.catalog.downstreams(up.version_id)} == {"down", "down_file", "down_table"}
    assert lake.read_table(lake.latest("down")).column("y").to_pylist() == [2, 4, 6]
    assert lake.read_table(lake.latest("down_file")).column("z").to_pylist() == [up.version_id] * 3
    with lake.catalog.engine.connect() as conn:
        loads = conn.execute(sa.select(sa.func.count()).where(access_log.c.version_id == up.version_id)).scalar_one()
    assert lake.read_table(lake.latest("down_table")).num_rows == 1 and loads == 3


def test_load_is_logged_with_run_and_step(letl_env, lake):
    result = run(make_graph([1, 2, 3])[:2])
    up = lake.latest("up")
    with lake.catalog.engine.connect() as conn:
        rows = conn.execute(sa.select(access_log).where(access_log.c.version_id == up.version_id)).all()
    assert [(r.kind, r.step_key, r.run_id) for r in rows] == [("load", "down", result.run_id)]


def test_rematerialize_is_idempotent_and_new_data_moves_latest(letl_env, lake):
    run(make_graph([1, 2, 3])[:2])
    first_up, first_down = lake.latest("up"), lake.latest("down")
    result = run(make_graph([1, 2, 3])[:2])
    assert lake.latest("up").version_id == first_up.version_id
    assert lake.latest("down").version_id == first_down.version_id
    assert len(lake.catalog.list_versions("up")) == 1
    mats = result.asset_materializations_for_node("up")
    assert mats[0].metadata["letl/version_id"].value == first_up.version_id
    assert len(stored_objects(lake)) == 2

    run(make_graph([7, 8])[:2])
    second_up, second_down = lake.latest("up"), lake.latest("down")
    assert second_up.version_id != first_up.version_id and second_up.rows == 2
    assert [v.version_id for v in lake.catalog.list_versions("up")] == [first_up.version_id, second_up.version_id]
    assert [u.version_id for u in lake.catalog.upstreams(second_down.version_id)] == [second_up.version_id]
    assert [u.version_id for u in lake.catalog.upstreams(first_down.version_id)] == [first_up.version_id]
    assert lake.catalog.version_index(second_up) == 1


def test_missing_upstream_raises_naming_the_asset(letl_env, lake):
    graph = make_graph([1])
    with pytest.raises(Exception) as failure:
        run(graph[:2], selection=["down"])
    chain, error = [], failure.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__
    assert any("no version of up" in text for text in chain), chain
    assert lake.catalog.list_versions() == []


REGIONS = dg.StaticPartitionsDefinition(["north", "south"])


@dg.asset(partitions_def=REGIONS)
def region_up(context: dg.AssetExecutionContext) -> pd.DataFrame:
    return pd.DataFrame({"region": [context.partition_key] * (2 if context.partition_key == "north" else 3)})


@dg.asset(partitions_def=REGIONS, metadata={"letl/tier": "ssd"})
def region_down(region_up: pd.DataFrame) -> pd.DataFrame:
    return region_up.assign(n=len(region_up))


def test_each_partition_gets_its_own_latest(letl_env, lake):
    for key in ("north", "south"):
        assert run([region_up, region_down], partition_key=key).success
    for key, rows in (("north", 2), ("south", 3)):
        up, down = lake.latest("region_up", key), lake.latest("region_down", key)
        assert up.partition == key and up.rows == rows and down.tier == "ssd"
        assert set(lake.read_table(up).column("region").to_pylist()) == {key}
        assert [u.version_id for u in lake.catalog.upstreams(down.version_id)] == [up.version_id]
    assert lake.latest("region_up") is None
    assert lake.latest("region_up", "north").version_id != lake.latest("region_up", "south").version_id
    assert len(lake.catalog.latest_ids()) == 4


@dg.multi_asset(outs={"first": dg.AssetOut(), "second": dg.AssetOut()})
def pair(context: dg.AssetExecutionContext):
    lake = LakeResource().get_lake()
    yield dg.Output(pd.DataFrame({"x": [1]}), output_name="first")
    # Handled, yet not visible: a step's outputs are published together, after its last one.
    assert lake.latest("first") is None and stored_objects(lake) != []
    if context.run.tags.get("fail") == "after_first":
        raise RuntimeError("the step dies between its two outputs")
    yield dg.Output(pd.DataFrame({"y": [2, 3]}), output_name="second")


def test_multi_asset_outputs_become_visible_together(letl_env, lake):
    result = run([pair])
    assert result.success
    first, second = lake.latest("first"), lake.latest("second")
    assert (first.rows, second.rows, first.run_id) == (1, 2, second.run_id)
    assert {v.version_id for v in lake.catalog.list_versions()} == {first.version_id, second.version_id}


def test_step_failing_between_outputs_publishes_nothing_and_leaves_no_object(letl_env, lake):
    result = run([pair], tags={"fail": "after_first"}, raise_on_error=False)
    assert not result.success
    assert lake.catalog.list_versions() == []
    assert stored_objects(lake) == []  # discarded when the run ends, not left for fsck


MONTHS = dg.MonthlyPartitionsDefinition(start_date="2024-01-01", end_date="2024-06-01")
RANGE = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-03-01"}


@dg.asset(partitions_def=MONTHS, backfill_policy=dg.BackfillPolicy.single_run())
def monthly_up(context: dg.AssetExecutionContext) -> ByPartition:
    return ByPartition({p: pd.DataFrame({"month": [p] * int(p[5:7])}) for p in context.partition_keys},
                       {p: {"rows_in": int(p[5:7])} for p in context.partition_keys})


@dg.asset(partitions_def=MONTHS, backfill_policy=dg.BackfillPolicy.single_run())
def monthly_down(context: dg.AssetExecutionContext, monthly_up: VersionFiles) -> ByPartition:
    assert list(monthly_up) == list(context.partition_keys)
    return ByPartition({p: pq.read_table(f.path).append_column("from", pa.array([f.version.version_id] * f.version.rows))
                        for p, f in monthly_up.items()})


def test_a_range_run_writes_one_version_per_partition_with_its_own_upstream(letl_env, lake):
    result = run([monthly_up, monthly_down], tags=RANGE)
    assert result.success
    months = ["2024-01-01", "2024-02-01", "2024-03-01"]
    ups = {p: lake.latest("monthly_up", p) for p in months}
    for p in months:
        up, down = ups[p], lake.latest("monthly_down", p)
        assert up.rows == down.rows == int(p[5:7]) and up.run_id == down.run_id == result.run_id
        assert up.metadata["output"] == {"rows_in": int(p[5:7])}  # its own metadata, not the range's
        assert [u.version_id for u in lake.catalog.upstreams(down.version_id)] == [up.version_id]
        assert set(lake.read_table(down).column("from").to_pylist()) == {up.version_id}
    assert lake.latest("monthly_up", "2024-04-01") is None
    events = result.asset_materializations_for_node("monthly_up")
    assert sorted(e.partition for e in events) == months
    versions = events[0].metadata["letl/versions"].value
    assert {p: v["version_id"] for p, v in versions.items()} == {p: ups[p].version_id for p in months}
    assert all(e.metadata["dagster/row_count"].value == 1 + 2 + 3 for e in events)
    assert [c.name for c in events[0].metadata["dagster/column_schema"].value.columns] == ["month"]
    # What differs per partition, which Dagster would stamp alike on each materialization, is observed per partition.
    seen = [e.event_specific_data.asset_observation for e in result.get_asset_observation_events()]
    ups_seen = {o.partition: o.metadata for o in seen if o.asset_key == dg.AssetKey("monthly_up")}
    assert {p: (m["letl/version_id"].value, m["dagster/partition_row_count"].value, m["dagster/uri"].value)
            for p, m in ups_seen.items()} == {p: (ups[p].version_id, ups[p].rows, lake.uri(ups[p])) for p in months}

    single = run([monthly_up, monthly_down], partition_key="2024-02-01")  # one partition, same code path
    assert single.success and lake.latest("monthly_up", "2024-02-01").version_id == ups["2024-02-01"].version_id


@dg.asset(partitions_def=MONTHS, backfill_policy=dg.BackfillPolicy.single_run())
def monthly_plain(context: dg.AssetExecutionContext) -> pd.DataFrame:
    return pd.DataFrame({"x": [1]})


@dg.asset(partitions_def=MONTHS, backfill_policy=dg.BackfillPolicy.single_run())
def monthly_short(context: dg.AssetExecutionContext) -> ByPartition:
    return ByPartition({context.partition_keys[0]: pd.DataFrame({"x": [1]})})


@pytest.mark.parametrize("asset, message", [(monthly_plain, "must return a ByPartition"),
                                            (monthly_short, "the output holds partitions")])
def test_a_range_output_must_cover_each_partition_or_nothing_is_published(letl_env, lake, asset, message):
    result = run([asset], tags=RANGE, raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert message in failure.step_failure_data.error.cause.message
    assert lake.catalog.list_versions() == [] and stored_objects(lake) == []
