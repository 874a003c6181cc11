"""The examples' sensors: new notebook versions reported to Dagster, and the freshness of the summary."""

from letl_assets.assets.labs import MONTHLY_WINDOW
from letl_assets.sensors.external import external_versions_sensor_for
from letl_assets.sensors.freshness import freshness_sensor_for
from letl_examples.assets import EXTERNAL_DATASETS, MY_DATASET_SUMMARY

external_versions_sensor = external_versions_sensor_for(EXTERNAL_DATASETS)
freshness_sensor = freshness_sensor_for({MY_DATASET_SUMMARY: MONTHLY_WINDOW}, name="examples_freshness_sensor")

sensors = [external_versions_sensor, freshness_sensor]
