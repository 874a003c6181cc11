"""TieredIOManager: every output becomes an immutable Parquet version in the lake."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import PrivateAttr

from letl.lake.catalog import Version
from letl.lake.lake import Staged
from letl.lake.moves import failpoint
from letl_assets.resources.event_metadata import arrow_schema, described_version, plain_values, table_metadata
from letl_assets.resources.tiers import LakeResource

TIER_HINT = "letl/tier"
# Input metadata holding a gros:// URI with a tag: load that exact version instead of the latest.
PIN = "letl/pin"
# Who may see a dataset in the explorer: "deidentified" (everyone) or "restricted" (stewards).
ACCESS = "letl/access"


@dataclass(frozen=True)
class VersionFile:
    """An input handed over as a file, for readers (DuckDB) that should not go through pandas."""

    version: Version
    path: Path


class VersionFiles(dict):
    """A partitioned input handed over as files, partition key -> VersionFile: one entry per month of
    a range run (a single-partition run gets one)."""


@dataclass(frozen=True)
class ByPartition:
    """The output of a range run: one value per partition, each stored as its own version.

    ``metadata`` holds what is true of one partition only (its row counts, its source files): it
    is kept with that partition's version, where Output metadata would be stamped on every one.
    """

    values: Mapping[str, Any]
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _pinned_version(lake, uri: str, partition: str | None):
    """The version a pinned gros:// URI names for this partition, to reproduce an old result."""
    from letl.lake.uri import parse, resolve

    ref = parse(uri)
    chosen = [v for v in resolve(lake, ref) if partition is None or v.partition == partition]
    if len(chosen) != 1:
        raise LookupError(f"pin {uri} selects {len(chosen)} versions for partition {partition!r}, not one")
    return chosen[0]


def _dataset(context: dg.OutputContext) -> dict:
    """What the explorer shows about a dataset, kept with each version so the catalog describes itself."""
    try:
        spec = context.asset_spec
    except dg.DagsterInvariantViolationError:  # contexts built by hand in tests carry no spec
        return {"access": context.definition_metadata.get(ACCESS, "restricted")}
    fail_window = getattr(spec.freshness_policy, "fail_window", None)
    return {
        "description": spec.description or "",
        "group": spec.group_name,
        "owners": list(spec.owners),
        # Undeclared datasets stay hidden from analysts: exposure is opted into, never assumed.
        "access": context.definition_metadata.get(ACCESS, "restricted"),
        "fresh_within_s": fail_window.to_timedelta().total_seconds() if fail_window is not None else None,
    }


def asset_key_str(key: dg.AssetKey) -> str:
    return "/".join(key.path)


def _upstreams(loaded: dict, partition: str | None, partitions: list) -> set[str]:
    """The loaded versions one partition of the output was built from. Over a range, each partition
    reads its own partition of an upstream: those of the other partitions in the range are not its
    inputs. A version of no partition in the range (unpartitioned, or another month through a
    partition mapping) may feed any of them, so it counts for each."""
    if len(partitions) == 1:
        return set(loaded)
    return {vid for vid, (_, p) in loaded.items() if p == partition or p not in partitions}


def _expected_outputs(context: dg.OutputContext) -> set[str]:
    """The outputs of this step that reach an IO manager; a Nothing output (an asset check's) never does."""
    return {o.name for o in context.op_def.output_defs if not o.dagster_type.is_nothing}


class TieredIOManager(dg.ConfigurableIOManager):
    """Writes outputs as new lake versions on a tier; loads the latest version of an upstream.

    An asset may return a pandas DataFrame, a pyarrow Table or RecordBatchReader, or the
    path of a Parquet file it wrote under the lake's staging directory (consumed). The
    tier comes from the asset's ``letl/tier`` metadata, else the hottest tier with room.

    One materialization is one commit: each output is staged, and all outputs of a step
    are published in one catalog transaction when its last output is handled, so a
    multi-asset's outputs become visible together or not at all. Every Dagster executor
    handles one step's outputs in one process, so one instance sees them all. Optional
    outputs that are not yielded, or a subset of a subsettable multi-asset, leave the set
    incomplete: it is discarded with a warning when the resource is torn down.
    """

    lake: dg.ResourceDependency[LakeResource]

    # Per op, the versions it loaded in this process: version id -> (access-log row, partition),
    # the exact upstreams of what it then writes. InputContext has no public run id, so the rows
    # are stamped with it when the op's outputs are handled.
    _loaded: dict = PrivateAttr(default_factory=dict)
    # Per (run id, step key): output name -> its Staged versions (none for a None output), until published.
    _pending: dict = PrivateAttr(default_factory=dict)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        lake = self.lake.get_lake()
        step = (context.run_id, context.step_key)
        pending = self._pending.setdefault(step, {})
        if context.name in pending:  # a retried step starts over: its earlier attempt never publishes
            lake.discard([s for staged in self._pending.pop(step).values() for s in staged])
            pending = self._pending.setdefault(step, {})
        pending[context.name] = [] if obj is None else self._stage_all(context, lake, obj)
        if set(pending) < _expected_outputs(context):
            return
        staged = [s for staged in self._pending.pop(step).values() for s in staged]
        failpoint("before_publish")  # the crash tests kill the process here: staged, nothing visible
        lake.publish(staged)

    def _stage_all(self, context: dg.OutputContext, lake, obj) -> list[Staged]:
        """One staged version per partition of the output; a failure discards those already staged."""
        for note in lake.config.notes:
            context.log.warning(note)
        loaded = self._loaded.get(context.op_def.name, {})
        lake.catalog.stamp_run([access for access, _ in loaded.values()], context.run_id)
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else [None]
        if isinstance(obj, ByPartition):
            if set(obj.values) != set(partitions):
                raise ValueError(f"{asset_key_str(context.asset_key)}: the output holds partitions "
                                 f"{sorted(obj.values)}, the run targets {partitions}")
            parts = [(p, obj.values[p], obj.metadata.get(p, {})) for p in partitions]
        elif len(partitions) == 1:
            parts = [(partitions[0], obj, {})]
        else:
            raise TypeError(f"{asset_key_str(context.asset_key)}: a run over {len(partitions)} partitions "
                            "must return a ByPartition, one value per partition")
        staged: list[Staged] = []
        schemas = []
        try:
            for partition, value, extra in parts:
                schemas.append(arrow_schema(value))
                staged.append(lake.stage_version(
                    asset_key_str(context.asset_key),
                    value,
                    partition=partition,
                    tier_hint=context.definition_metadata.get(TIER_HINT),
                    run_id=context.run_id,
                    upstream_ids=_upstreams(loaded, partition, partitions),
                    metadata={
                        "step_key": context.step_key,
                        "output": {**plain_values(context.output_metadata), **extra},
                        "dataset": _dataset(context),
                    },
                ))
        except BaseException:
            lake.discard(staged)
            raise
        described = [described_version(lake, s) for s in staged]
        table = table_metadata(lake, staged, schemas) if staged else {}
        if len(described) == 1:
            context.add_output_metadata({**described[0], **table})
            return staged
        # Metadata an IO manager adds is stamped on every partition's materialization alike: what differs
        # per partition goes on one observation of each, and the materializations carry it as one map.
        by_partition = {s.version.partition: {k.removeprefix("letl/"): v for k, v in d.items()}
                        for s, d in zip(staged, described, strict=True)}
        context.add_output_metadata({**table, "letl/versions": by_partition})
        for s, d in zip(staged, described, strict=True):
            context.log_event(dg.AssetObservation(context.asset_key, partition=s.version.partition, metadata=d))
        return staged

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Outputs of steps that failed before their last output stay invisible; drop their objects now
        rather than leaving them to fsck."""
        run_id = context.run.run_id if context.run else None
        steps = [step for step in self._pending if step[0] == run_id]
        leftovers = [s for step in steps for staged in self._pending.pop(step).values() for s in staged]
        if leftovers:
            self.lake.get_lake().discard(leftovers)
            if context.log is not None:
                names = ", ".join(sorted({s.version.asset_key for s in leftovers}))
                context.log.warning(f"discarded unpublished outputs of unfinished steps: {names}")

    def load_input(self, context: dg.InputContext):
        lake = self.lake.get_lake()
        key = asset_key_str(context.asset_key)
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        found = []
        pin = context.definition_metadata.get(PIN)
        notes = []
        for partition in partitions:
            version = _pinned_version(lake, pin, partition) if pin else lake.latest(key, partition)
            if version is None and not pin and lake.branch != "main":
                # A feature branch reads main's data until it writes its own, and says so.
                version = lake.latest(key, partition, branch="main")
                if version is not None:
                    notes.append(f"{key}{f' {partition}' if partition else ''}: read from main")
            if version is None:
                raise FileNotFoundError(
                    f"no version of {key}{f' partition {partition}' if partition else ''} on branch "
                    f"{lake.branch!r} in {lake.config.home}: materialize it first"
                )
            access_id = lake.record_access(version, "load", step_key=context.op_def.name)
            self._loaded.setdefault(context.op_def.name, {})[version.version_id] = (access_id, partition)
            found.append(version)
        described = {"versions": ", ".join(v.version_id for v in found), "pinned": pin or "no",
                     "branch_fallback": "; ".join(notes) or "none"}
        if len(partitions) == 1:
            context.add_input_metadata(described)
        else:  # Dagster 1.13 stamps input metadata on one partition only and refuses a range: log it
            context.log.info(f"loaded {key}: " + "; ".join(f"{k}: {v}" for k, v in described.items()))
        wanted = context.dagster_type.typing_type
        if wanted is VersionFiles:
            return VersionFiles({p: VersionFile(v, lake.local_path(v)) for p, v in zip(partitions, found, strict=False)})
        if wanted is VersionFile:
            if len(found) != 1:
                raise ValueError(f"{key}: VersionFile inputs need exactly one partition, got {len(found)}")
            return VersionFile(found[0], lake.local_path(found[0]))
        table = pa.concat_tables([lake.read_table(v) for v in found])
        return table if wanted is pa.Table else table.to_pandas()
