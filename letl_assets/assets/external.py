"""Datasets written into the lake from outside Dagster (notebooks through gros://): how a code
location declares them and their downstreams. The examples (``team/*``) live in the code location
``letl_examples``, not in production.

A notebook's ``df.to_parquet("gros://team.my_dataset")`` commits a new version of the
asset key ``team/my_dataset`` (metadata ``writer=external``). Dagster cannot materialize
such a dataset, so a code location declares it as an external ``AssetSpec`` (``external_specs``);
the sensor that ``letl_assets.sensors.external.external_versions_sensor_for`` makes for its
datasets reports each new version as an ``AssetMaterialization``.

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

from letl.lake.uri import dataset_uri, parse
from letl_assets.assets.labs import ON_UPSTREAM_CHANGE

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


def external_specs(datasets: tuple[ExternalDataset, ...]) -> list[dg.AssetSpec]:
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
