"""`letl sample-data`, `letl run` and `letl summary`: make lab drops, materialize them, and say whether
the lake is current. Only `letl run` loads Dagster, and only when it runs."""

import shlex
from pathlib import Path

from letl.cli.common import open_lake


def cmd_sample_data(args) -> int:
    from letl.labs.sample import generate_drops
    from letl.lake.sources import landing_root

    landing = Path(args.landing) if args.landing else landing_root()
    drops = generate_drops(
        landing, months=args.months, hospitals=args.hospitals, rows_per_file=args.rows_per_file,
        seed=args.seed, start_month=args.start,
    )
    rows = sum(d.rows for d in drops)
    defects = sum(sum(d.defects.values()) for d in drops)
    print(f"wrote {len(drops)} drop files, {rows:,} rows ({defects:,} with planted defects) under {landing / 'labs'}")
    return 0


def cmd_run(args) -> int:
    """Exit 0 only when every month with drops is current and reconciled; 1 when a month failed or is
    stale (each listed with its reason); with --no-wait, InProgress's code when another run holds LETL_HOME."""
    from letl.cli.objectstore import start_for_run
    from letl.cli.progress import progress
    from letl.cli.report import format_summary, summary
    from letl.labs.sample import generate_drops
    from letl.lake.config import LakeConfig
    from letl_assets.local_run import ensure_dagster_home, parse_months, run_lock, run_months
    from letl_assets.resources.landing import LandingZone

    if args.months:
        parse_months(args.months)  # a bad month is refused before any drop is generated or server started
    home = LakeConfig.resolve().home
    with run_lock(home, print, wait=not args.no_wait):
        landing = LandingZone()
        if not landing.drops(settled=False):
            drops = generate_drops(landing.root(), months=12, hospitals=5, rows_per_file=args.sample_rows, seed=42)
            print(f"landing zone {landing.root()} was empty: generated {len(drops)} sample drops "
                  f"({sum(d.rows for d in drops):,} rows)")
        start_for_run()
        for note in open_lake(create=True).config.notes:
            print(f"warning: {note}")
        # Month lines go to stdout (the command's result); the bar of drop bytes to stderr, drawn on a terminal.
        with progress("letl run", unit="B") as bar:
            outcomes = run_months(args.months, args.force, bar=bar)
        failures = {o["partition"]: o["reason"] for o in outcomes if o["status"] == "FAILED"}
        data = summary(open_lake(), failures)
    print()
    print(format_summary(data))
    print()
    # The instance the runs went to: LETL_HOME/dagster unless DAGSTER_HOME named another.
    instance = shlex.quote(str(ensure_dagster_home(home)))
    print(f"Open the Dagster UI on this data:  make ui   (or: DAGSTER_HOME={instance} dg dev -w workspace.yaml)")
    return 0 if data["reconciled"] else 1


def cmd_summary(args) -> int:
    from letl.cli.report import dumps, format_summary, summary

    data = summary(open_lake())
    print(dumps(data) if args.json else format_summary(data))
    return 0


def add_commands(sub) -> None:
    s = sub.add_parser("sample-data", help="generate deterministic sample hospital lab drops")
    s.add_argument("--months", type=int, default=12, help="months of drops (default 12)")
    s.add_argument("--hospitals", type=int, default=5, help="hospitals (default 5)")
    s.add_argument("--rows-per-file", type=int, default=20_000, help="rows per drop file (default 20000)")
    s.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    s.add_argument("--start", default="2024-01", help="first month, YYYY-MM (default 2024-01)")
    s.add_argument("--landing", help="landing zone (default LETL_LANDING or LETL_HOME/landing)")
    s.set_defaults(func=cmd_sample_data)

    r = sub.add_parser("run", help="materialize every lab asset for every month in the landing zone")
    r.add_argument("--months", nargs="*", metavar="YYYY-MM",
                   help="only these months: 2024-03, 2024-3, or a range 2024-01..2024-06")
    r.add_argument("--force", action="store_true", help="rebuild months whose drops did not change")
    r.add_argument("--sample-rows", type=int, default=20_000, help="rows per sample file if the landing zone is empty")
    r.add_argument("--no-wait", action="store_true", help="refuse (exit 9) instead of waiting while another run holds LETL_HOME")
    r.set_defaults(func=cmd_run)

    sm = sub.add_parser("summary", help="datasets, versions, rows and tiers of the latest versions")
    sm.add_argument("--json", action="store_true", help="machine-readable output")
    sm.set_defaults(func=cmd_summary)
