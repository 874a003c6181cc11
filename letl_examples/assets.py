"""Example datasets written from notebooks (``team/*``) and assets downstream of them: the code location
``letl_examples``, beside the production one (``letl_assets``), listed in workspace.yaml.

How a downstream reads an external dataset decides whether it follows it (see
``letl_assets.assets.external``): ``team/my_dataset_summary`` follows every new version (no pin),
``team/my_dataset_snapshot`` is a pinned read that only a person materializes, and
``team/monthly_counts_summary`` follows each month, late historic ones too.
"""

import dagster as dg

from letl.lake import names
from letl_assets.assets.external import GROUP, ExternalDataset, automation_for, external_specs
from letl_assets.assets.labs import MONTHLY, MONTHLY_FRESHNESS
from letl_assets.resources.io_manager import PIN, VersionFile

# The registry: add a dataset here and both its AssetSpec and the sensor pick it up.
EXTERNAL_DATASETS: tuple[ExternalDataset, ...] = (
    ExternalDataset("team/my_dataset", description="Written by the team's notebooks via gros://team.my_dataset."),
    ExternalDataset(
        "team/monthly_counts",
        partitions_def=MONTHLY,
        description="Monthly counts written by notebooks via gros://team.monthly_counts?partition=YYYY-MM-01.",
    ),
)


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


specs = external_specs(EXTERNAL_DATASETS)
assets = [*specs, my_dataset_summary, my_dataset_snapshot, monthly_counts_summary]
