"""No BetaWarning, PreviewWarning or SupersessionWarning, and no DeprecationWarning attributed to LETL's
code, from loading both code locations, a materialization and every sensor: warnings are errors in
a fresh process, set before anything of ours is imported (as `python -W error` would).

Two features that Dagster 1.13 still marks beta or preview are used on purpose and filtered by their
exact message where they are declared: the single-run backfill policy (range runs) and partitioned
asset checks. Any other such warning fails this test."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import warnings

    import dagster as dg

    for category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning):
        warnings.filterwarnings("error", category=category)
    # The module a warning is attributed to starts with "letl": letl, letl_assets or letl_examples.
    warnings.filterwarnings("error", category=DeprecationWarning, module="letl")

    from letl.labs.sample import generate_drops
    from letl.lake.sources import landing_root
    from letl_assets.local_run import run_months
    from letl_assets.resources.landing import LandingZone
    import letl_assets.definitions as production
    import letl_examples.definitions as examples

    generate_drops(landing_root(), months=1, hospitals=2, rows_per_file=60, seed=3)
    outcomes = run_months(None, force=False, log=lambda line: None)
    assert [o["status"] for o in outcomes] == ["ok"], outcomes
    instance = dg.DagsterInstance.get()
    for defs in (production.defs, examples.defs):
        resources = dict(defs.resources)
        if "landing" in resources:  # the drops were just written: settled for this tick
            resources["landing"] = LandingZone(settle_seconds=0)
        for sensor in defs.get_repository_def().sensor_defs:
            if isinstance(sensor, dg.AutomationConditionSensorDefinition):
                dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=sensor.asset_selection)
                continue
            with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
                sensor(context)
    print("no warning")
''')


def test_loading_materializing_and_sensing_raise_no_beta_preview_supersession_or_own_deprecation(letl_env):
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("no warning"), done.stdout[-3000:] + done.stderr[-3000:]
