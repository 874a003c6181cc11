"""The example code location: datasets written from notebooks (team/*) and what follows them.

A second location in workspace.yaml, so that production (``letl_assets.definitions``) holds only
the lab pipeline. It writes into the same lake, through the same IO manager.
"""

import dagster as dg

from letl_assets.resources.io_manager import TieredIOManager
from letl_assets.resources.tiers import LakeResource
from letl_examples import assets, sensors

lake = LakeResource()

defs = dg.Definitions(
    assets=assets.assets,
    executor=dg.in_process_executor,  # as in production: small steps, no re-import per step
    sensors=[
        *sensors.sensors,
        dg.AutomationConditionSensorDefinition(
            "letl_examples_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING
        ),
    ],
    resources={"lake": lake, "io_manager": TieredIOManager(lake=lake)},
)
