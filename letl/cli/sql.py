"""`letl sql`: the lake in a DuckDB shell, for DuckDB CLI users, under the explorer's rules.

The real ``duckdb`` binary cannot read the lake (gros:// is a Python fsspec protocol, and the pip package
``duckdb`` ships no CLI). This runs on the explorer's query service (letl/query/service.py), so it is the
same in every respect that matters: one view per dataset the role may read, named as in the explorer;
the SQL guard (one read-only SELECT over those views); a locked connection in a worker process that is
killed past the time or memory limit; the row cap; and the audit (the versions a query read go to the
access log, refusals and failures to the query log, by SQL hash only).

The role: a steward (the user is in ``LETL_STEWARDS``, as for gros://) sees every dataset, anyone else
the de-identified ones. ``--role analyst`` narrows a steward's view; ``--role steward`` is refused to a
non-steward.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import TextIO

from letl.cli.statements import statement_end

PROMPT, MORE = "letl> ", "  ...> "
HELP = """.tables          the datasets you may query (view, dataset, rows, partitions)
.schema VIEW     the columns of a view
.help            this text
.quit / .exit    leave (so does end of input)
Anything else is SQL, run when a line ends with a ';' outside strings and comments: one SELECT over the views."""
CELL = 40  # widest cell a table shows; csv and json print values whole


def role_for(requested: str | None, user: str) -> str:
    from letl.lake.access import STEWARDS_ENV, stewards
    from letl.lake.errors import AccessDenied

    steward = user in stewards()
    if requested == "steward" and not steward:
        raise AccessDenied(f"user {user!r} is not a steward, so --role steward is refused: ask the lake's "
                           f"administrator to add {user!r} to {STEWARDS_ENV}, or query as an analyst")
    return requested or ("steward" if steward else "analyst")


def open_explorer(role: str | None):
    from letl.cli.common import open_lake
    from letl.lake.errors import AccessDenied
    from letl.lake.lake import current_user
    from letl.query.service import Explorer, Settings

    lake = open_lake()  # a reader never creates a lake where it happens to run
    try:
        chosen = role_for(role, current_user())
    except AccessDenied:
        # Audited like every refusal; a fixed category, as the explorer's query log keeps.
        lake.catalog.record_query_event("query-refused", None, detail="role", user=current_user(),
                                        host=socket.gethostname())
        raise
    return Explorer(lake, chosen, Settings.from_env())


def run_one(ex, sql: str, fmt: str, out: TextIO) -> None:
    """One statement through the explorer's guard, limits and audit; printed in ``fmt``."""
    from letl.lake.errors import InvalidInput, LetlError
    from letl.query.engine import DuplicateColumns, QueryError

    try:
        result = ex.run(sql, use_cache=False)
    except DuplicateColumns as exc:  # the SQL's to fix, as a refused statement is
        raise InvalidInput(str(exc)) from None
    except QueryError as exc:  # past the guard: the time or memory limit, or DuckDB's own error
        raise LetlError(str(exc)) from None
    write(result.table, fmt, out)
    if result.truncated:
        print(f"(cut at the row cap of {ex.settings.row_cap:,} rows; set LETL_EXPLORER_ROW_CAP for more)",
              file=sys.stderr)


def write(table, fmt: str, out: TextIO) -> None:
    if fmt == "csv":
        from letl.query.export import table_bytes

        out.write(table_bytes(table, "csv").decode())
    elif fmt == "json":
        out.write(json.dumps(table.to_pylist(), default=str) + "\n")
    else:
        out.write(as_text(table.column_names, table.to_pylist()))


def as_text(columns: list[str], rows: list[dict]) -> str:
    def cell(value) -> str:
        text = "NULL" if value is None else str(value).replace("\n", " ")
        return text if len(text) <= CELL else text[: CELL - 1] + "…"

    body = [[cell(r[c]) for c in columns] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in body)]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)).rstrip()

    count = f"({len(rows)} row{'' if len(rows) == 1 else 's'})\n"
    return "\n".join([line(columns), "-+-".join("-" * w for w in widths), *(line(r) for r in body)]) + "\n" + count


def dot_command(ex, command: str, out: TextIO) -> bool:
    """Run a dot command; False for .quit/.exit."""
    from letl.lake.errors import InvalidInput

    word, _, rest = command.partition(" ")
    if word in (".quit", ".exit"):
        return False
    if word == ".help":
        out.write(HELP + "\n")
    elif word == ".tables":
        rows = [{"view": v.name, "dataset": v.dataset.key, "rows": v.dataset.rows, "partitions": len(v.dataset.partitions)}
                for v in ex.snapshot.views.values()]
        rows += [{"view": name, "dataset": f"(not queryable: {why})", "rows": None, "partitions": None}
                 for name, why in ex.snapshot.unavailable.items()]
        out.write(as_text(["view", "dataset", "rows", "partitions"], rows))
    elif word == ".schema":
        try:
            columns = ex.schema(rest.strip())
        except KeyError:
            raise InvalidInput(f"no view {rest.strip()!r}: .tables lists the views you may query") from None
        out.write(as_text(["column", "type"], [{"column": c, "type": t} for c, t in columns.items()]))
    else:
        raise InvalidInput(f"unknown command {word!r}: .help lists the commands")
    return True


def shell(ex, fmt: str, lines: TextIO, out: TextIO, interactive: bool) -> int:
    """A statement ends at a line ending with a ';' outside strings and comments; dot commands are lines of their own. An error is
    printed and the shell goes on; the exit code is that of the last error (0 if none). On a terminal,
    lines are edited with readline, and Ctrl-C drops the statement being typed or run, not the shell."""
    from letl.lake.errors import LetlError, exit_code, one_line

    status, pending = 0, []
    if interactive:
        import readline  # noqa: F401  (input() then edits lines and keeps a history)

        count = len(ex.snapshot.views)
        out.write(f"letl sql: {count} dataset{'' if count == 1 else 's'} as views ({ex.role}); .help for help\n")
    while True:
        try:
            line = _next_line(lines, MORE if pending else PROMPT, interactive)
            if line is None:
                if pending and not statement_end("\n".join(pending))[1]:  # the last may lack its ';'
                    run_one(ex, "\n".join(pending), fmt, out)
                return status
            text = line.strip()
            if not pending and text.startswith("."):
                if not dot_command(ex, text, out):
                    return status
            elif text or pending:
                pending.append(line.rstrip("\n"))
                sql = "\n".join(pending)
                ended, empty = statement_end(sql)
                if ended:
                    pending = []
                    if not empty:  # a lone ';' (or a comment) is no statement, as in sqlite3
                        run_one(ex, sql, fmt, out)
        except LetlError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            status = exit_code(exc)
            if line is None:
                return status
        except KeyboardInterrupt:
            if not interactive:
                raise
            print("\ninterrupted", file=sys.stderr)
            pending = []
        out.flush()


def _next_line(lines: TextIO, prompt: str, interactive: bool) -> str | None:
    if not interactive:
        return lines.readline() or None
    try:
        return input(prompt) + "\n"
    except EOFError:
        return None


def cmd_sql(args) -> int:
    from letl.lake.errors import InvalidInput

    if args.query and args.command_text:
        raise InvalidInput("give the query once: as the argument or with -c, not both")
    query = args.query or args.command_text
    ex = open_explorer(args.role)
    try:
        if query is not None:
            run_one(ex, query, args.format, sys.stdout)
            return 0
        return shell(ex, args.format, sys.stdin, sys.stdout, sys.stdin.isatty())
    finally:
        ex.close()


def add_commands(sub) -> None:
    import argparse

    p = sub.add_parser(
        "sql", help="query the lake in SQL (a DuckDB shell, or one query)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Every dataset you may read, as a DuckDB view named as in the explorer (lab_results, ...;\n"
        "a partitioned one has a partition_key column), under the explorer's rules: one read-only SELECT\n"
        "at a time, LETL_EXPLORER_TIMEOUT_S, LETL_EXPLORER_MEMORY_LIMIT, LETL_EXPLORER_ROW_CAP, and every\n"
        "query in the catalog's access log.\n\n"
        "With no query, a shell: SQL ending in ';' (outside strings and comments), .tables, .schema VIEW, .help, .quit.\n"
        "Without a terminal it reads the statements from standard input.",
        epilog="examples:\n"
        '  letl sql "SELECT count(*) FROM lab_results"\n'
        '  letl sql -c "SELECT * FROM lab_results LIMIT 5" --format csv > five.csv\n'
        "  echo 'SELECT partition_key, count(*) FROM lab_results GROUP BY 1;' | letl sql --format json\n\n"
        "Errors print one line; the exit code says what kind (2 refused or malformed SQL, 8 access denied, ...).",
    )
    p.add_argument("query", nargs="?", help="one SELECT to run and print (then exit)")
    p.add_argument("-c", dest="command_text", metavar="SQL", help="the same, as an option")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default table)")
    p.add_argument("--role", choices=("analyst", "steward"),
                   help="default: steward if your user name is in LETL_STEWARDS, else analyst (de-identified datasets only)")
    p.set_defaults(func=cmd_sql)
