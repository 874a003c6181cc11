"""The LETL code location."""

import dagster as dg

from letl_assets.assets import lab_checks, labs
from letl_assets.resources.deid import PseudonymKey
from letl_assets.resources.io_manager import TieredIOManager
from letl_assets.resources.landing import LandingZone
from letl_assets.resources.tiers import LakeResource
from letl_assets.sensors import freshness, moves, tiering
from letl_assets.sensors.landing import lab_drops_sensor

lake = LakeResource()

# In-process on purpose: every step is a DuckDB query that already uses all cores, and
# the multiprocess executor re-imports the code location for each step (~3.5 s apiece).
EXECUTOR = dg.in_process_executor

labs_job = dg.define_asset_job(
    "labs_job",
    selection=dg.AssetSelection.groups("labs") - dg.AssetSelection.assets(labs.LAB_DROPS),
    executor_def=EXECUTOR,
    description="Parse, de-identify and summarize hospital lab drops: one month, or a range of months in one run.",
)

defs = dg.Definitions(
    assets=[labs.lab_drops, labs.lab_results, labs.lab_results_summary],
    asset_checks=[lab_checks.rows_reconcile, lab_checks.no_raw_identifiers, lab_checks.physiological_bounds],
    jobs=[labs_job, *tiering.jobs],
    executor=EXECUTOR,
    sensors=[
        lab_drops_sensor,
        *tiering.sensors,
        *moves.sensors,
        *freshness.sensors,
        dg.AutomationConditionSensorDefinition(
            "letl_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING
        ),
    ],
    resources={
        "lake": lake,
        "io_manager": TieredIOManager(lake=lake),
        "landing": LandingZone(),
        "pseudonym": PseudonymKey(),
    },
)
