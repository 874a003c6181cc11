"""Datasets written into the lake from outside Dagster (notebooks through gros://), and
examples of assets downstream of them.

A notebook's ``df.to_parquet("gros://team.my_dataset")`` commits a new version of the
asset key ``team/my_dataset`` (metadata ``writer=external``). Dagster cannot materialize
such a dataset, so it is declared here as an external ``AssetSpec``; the sensor in
``letl_assets.sensors.external`` reports each new version as an ``AssetMaterialization``.

How a downstream reads an external dataset decides whether it follows it:

* no ``letl/pin`` (or a pin with an empty tag, ``gros://team.my_dataset``): a *real-time*
  dependency. The downstream reads the latest version and is rematerialized whenever a
  new one is reported (``ON_UPSTREAM_CHANGE``, which also covers historic partitions).
* a pin with a tag (``gros://team.my_dataset:latest``, a date, an index): a *pinned*
  read. A new upstream version must never trigger it, so that dependency is ignored by
  the automation condition (``automation_for`` below), and an asset with only pinned
  inputs gets no automation condition at all.
"""

from dataclasses import dataclass
from typing import Mapping, Optional

import dagster as dg

from letl.lake import names
from letl.lake.uri import dataset_uri, parse
from letl_assets.assets.labs import MONTHLY, MONTHLY_FRESHNESS, ON_UPSTREAM_CHANGE
from letl_assets.resources.io_manager import PIN, VersionFile

GROUP = "external"


@dataclass(frozen=True)
class ExternalDataset:
    """One dataset an outside writer owns: its asset key ("team/my_dataset") and partitioning."""

    key: str
    partitions_def: Optional[dg.PartitionsDefinition] = None
    description: str = ""

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey(self.key.split("/"))


# The registry: add a dataset here and both its AssetSpec and the sensor pick it up.
EXTERNAL_DATASETS: tuple[ExternalDataset, ...] = (
    ExternalDataset("team/my_dataset", description="Written by the team's notebooks via gros://team.my_dataset."),
    ExternalDataset(
        "team/monthly_counts",
        partitions_def=MONTHLY,
        description="Monthly counts written by notebooks via gros://team.monthly_counts?partition=YYYY-MM-01.",
    ),
)


def external_spec(dataset: ExternalDataset) -> dg.AssetSpec:
    """The external (not materializable by Dagster) asset of a notebook-written dataset."""
    return dg.AssetSpec(
        dataset.asset_key,
        description=dataset.description or f"External dataset written via {dataset_uri(dataset.key)}.",
        partitions_def=dataset.partitions_def,
        group_name=GROUP,
        metadata={"letl/writer": "external", "letl/uri": dataset_uri(dataset.key)},
        kinds={"parquet"},
    )


def external_specs(datasets: tuple[ExternalDataset, ...] = EXTERNAL_DATASETS) -> list[dg.AssetSpec]:
    return [external_spec(d) for d in datasets]


def automation_for(pins: Mapping[dg.AssetKey, Optional[str]]) -> Optional[dg.AutomationCondition]:
    """The automation condition of a downstream, from its inputs' pins (None = no pin).

    Real-time inputs (no pin, or a gros:// URI with an empty tag) drive ON_UPSTREAM_CHANGE;
    pinned inputs are ignored by it. With no real-time input at all, there is no condition:
    a pinned reader is only ever materialized on purpose.
    """
    pinned = [key for key, uri in pins.items() if uri is not None and not parse(uri).realtime]
    if len(pinned) == len(pins):
        return None
    if not pinned:
        return ON_UPSTREAM_CHANGE
    return ON_UPSTREAM_CHANGE.ignore(dg.AssetSelection.assets(*pinned))


MY_DATASET = dg.AssetKey(["team", "my_dataset"])
MY_DATASET_SUMMARY = dg.AssetKey.from_user_string(names.MY_DATASET_SUMMARY)
MY_DATASET_SNAPSHOT = dg.AssetKey.from_user_string(names.MY_DATASET_SNAPSHOT)
MONTHLY_COUNTS = dg.AssetKey(["team", "monthly_counts"])
MONTHLY_COUNTS_SUMMARY = dg.AssetKey.from_user_string(names.MONTHLY_COUNTS_SUMMARY)

SNAPSHOT_PIN = "gros://team.my_dataset:latest"


def _describe(df):
    """One row per column: non-null count and, for numeric columns, mean/min/max."""
    import pandas as pd  # loads with the step, not with the code location

    rows = []
    for name in df.columns:
        column = df[name]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        rows.append(
            {
                "column": str(name),
                "rows": len(column),
                "non_null": int(column.notna().sum()),
                "mean": float(column.mean()) if numeric and column.notna().any() else None,
                "min": float(column.min()) if numeric and column.notna().any() else None,
                "max": float(column.max()) if numeric and column.notna().any() else None,
            }
        )
    return pd.DataFrame(rows, columns=["column", "rows", "non_null", "mean", "min", "max"])


@dg.asset(
    key=MY_DATASET_SUMMARY,
    ins={"source": dg.AssetIn(key=MY_DATASET)},  # no pin: real-time dependency
    automation_condition=automation_for({MY_DATASET: None}),
    freshness_policy=MONTHLY_FRESHNESS,
    group_name=GROUP,
    kinds={"parquet"},
)
def my_dataset_summary(source):
    """Per-column profile of the latest version of team/my_dataset; follows every new version."""
    return _describe(source)


@dg.asset(
    key=MY_DATASET_SNAPSHOT,
    ins={"source": dg.AssetIn(key=MY_DATASET, metadata={PIN: SNAPSHOT_PIN})},
    automation_condition=automation_for({MY_DATASET: SNAPSHOT_PIN}),  # None: a pinned read never triggers
    group_name=GROUP,
    kinds={"parquet"},
)
def my_dataset_snapshot(source):
    """A frozen copy of team/my_dataset as of when it is materialized by hand (pinned read)."""
    return source


@dg.asset(
    key=MONTHLY_COUNTS_SUMMARY,
    ins={"source": dg.AssetIn(key=MONTHLY_COUNTS)},  # real-time, month to month
    partitions_def=MONTHLY,
    automation_condition=automation_for({MONTHLY_COUNTS: None}),
    group_name=GROUP,
    kinds={"parquet", "duckdb"},
)
def monthly_counts_summary(context: dg.AssetExecutionContext, source: VersionFile):
    """Per-column profile of one month of team/monthly_counts; late months propagate too."""
    import pyarrow.parquet as pq

    context.log.info(f"{context.partition_key}: reading version {source.version.version_id}")
    return _describe(pq.read_table(source.path).to_pandas())


specs = external_specs()
assets = [*specs, my_dataset_summary, my_dataset_snapshot, monthly_counts_summary]
