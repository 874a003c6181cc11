"""`letl.cli.progress`: a rich bar on a terminal, sparse plain lines elsewhere, sizes in binary units."""

import io
import threading

import pytest

from letl.cli import progress as progress_mod
from letl.cli.progress import progress

MiB = 2**20


class Terminal(io.StringIO):
    """What rich sees as a terminal: a stream whose isatty() is true."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """Plain mode's clock, moved by the test instead of by waiting."""
    now = [1000.0]
    monkeypatch.setattr(progress_mod, "_clock", lambda: now[0])
    return now


def test_plain_mode_prints_a_line_per_interval_not_per_update(clock):
    out = io.StringIO()
    with progress("copy a.parquet", total=100 * MiB, stream=out) as bar:
        for _ in range(10):  # ten updates within one interval: no line
            bar.advance(MiB)
        assert out.getvalue() == ""
        clock[0] += progress_mod.PLAIN_INTERVAL_S
        bar.advance(MiB)
        bar.advance(MiB)  # same instant: still one line
        clock[0] += progress_mod.PLAIN_INTERVAL_S
        bar.update(50 * MiB)
        clock[0] += 1
    assert out.getvalue().splitlines() == [
        "copy a.parquet: 11.0 MiB / 100.0 MiB (11%)",
        "copy a.parquet: 50.0 MiB / 100.0 MiB (50%)",
        "copy a.parquet: 50.0 MiB in 11.0 s (4.5 MiB/s)",
    ]


def test_plain_mode_notes_are_lines_and_counts_are_not_sizes(clock):
    out = io.StringIO()
    with progress("letl run", total=3, unit="months", stream=out) as bar:
        for month in ("2024-01", "2024-02", "2024-03"):
            bar.note(f"{month}: 1,000 rows")
            bar.advance()
        clock[0] += 2
    assert out.getvalue().splitlines() == ["2024-01: 1,000 rows", "2024-02: 1,000 rows", "2024-03: 1,000 rows",
                                           "letl run: 3 months in 2.0 s (2 months/s)"]


def test_plain_mode_update_takes_the_lake_callback_shape_from_many_threads(clock):
    out = io.StringIO()
    with progress("upload", stream=out) as bar:
        threads = [threading.Thread(target=lambda: [bar.advance(1) for _ in range(1000)]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bar.done == 4000
        bar.update(6000, 8000)
        assert (bar.done, bar.total) == (6000, 8000)
    assert out.getvalue().splitlines() == ["upload: 5.9 KiB in 0.0 s"]


def test_terminal_mode_draws_a_rich_bar_with_binary_sizes_and_notes_above_it():
    term = Terminal()
    with progress("move v1 -> hdd", total=4 * MiB, stream=term) as bar:
        bar.note("v0: ssd -> hdd: done")
        bar.update(3 * MiB)
        bar.advance(MiB)
    shown = term.getvalue()
    assert "\x1b[" in shown, "a terminal gets ANSI drawing, not plain lines"
    assert "v0: ssd -> hdd: done" in shown
    assert "4.0 MiB / 4.0 MiB" in shown and "move v1 -> hdd" in shown and "100%" in shown
    assert " MB" not in shown and "in 0." not in shown  # no decimal units, no plain-mode summary line


def test_default_stream_is_stderr_so_stdout_keeps_only_results(capsys):
    with progress("x", total=10, unit="files") as bar:
        bar.note("one done")
        bar.advance(10)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[0] == "one done"
    assert captured.err.splitlines()[1].startswith("x: 10 files in ")


# -- `letl tier move` and `letl tier write` ----------------------------------------------------------

@pytest.fixture
def two_partitions(lake):
    import pandas as pd

    return [lake.write_version("labs/bars", pd.DataFrame({"a": range(n)}), partition=p, tier_hint="ssd")
            for n, p in ((1000, "2024-01-01"), (2000, "2024-02-01"))]


def test_tier_move_prints_each_result_as_it_finishes_with_a_bar_per_file_above_the_threshold(
        two_partitions, capsys, monkeypatch):
    from letl.cli import main as cli
    from letl.lake.config import format_size
    from letl.lake.moves import Mover

    monkeypatch.setenv("LETL_PROGRESS_BYTES", "1")
    printed_before_each_move = []
    real_move = Mover.move

    def watched(self, *args, **kwargs):
        printed_before_each_move.append(capsys.readouterr().out)
        return real_move(self, *args, **kwargs)

    monkeypatch.setattr(Mover, "move", watched)
    assert cli.main(["tier", "move", "--asset", "labs/bars", "--to", "hdd", "--request-id", "bars"]) == 0
    first, second = two_partitions
    assert printed_before_each_move[0] == ""
    assert printed_before_each_move[1] == f"bars/{first.version_id}: {first.version_id} ssd -> hdd: done\n"
    captured = capsys.readouterr()
    assert captured.out == f"bars/{second.version_id}: {second.version_id} ssd -> hdd: done\n"
    lines = captured.err.splitlines()
    assert [line.split(" in ")[0] for line in lines] == [f"{second.version_id} -> hdd: {format_size(second.bytes)}"]


def test_files_below_the_threshold_and_json_output_show_no_bar(two_partitions, capsys, letl_env, monkeypatch):
    import json

    from letl.cli import main as cli
    from letl.lake.config import format_size

    assert cli.main(["tier", "move", "--asset", "labs/bars", "--to", "hdd", "--json"]) == 0  # default 64 MiB
    captured = capsys.readouterr()
    assert captured.err == "" and [r["state"] for r in json.loads(captured.out)] == ["done", "done"]

    # Above the threshold, the bar goes to stderr: stdout stays one JSON document, nothing before or after it.
    monkeypatch.setenv("LETL_PROGRESS_BYTES", "1")
    assert cli.main(["tier", "move", "--asset", "labs/bars", "--to", "ssd", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("[") and captured.out.endswith("]\n")
    assert [(r["dst_tier"], r["state"]) for r in json.loads(captured.out)] == [("ssd", "done"), ("ssd", "done")]
    assert [line.split(" in ")[0] for line in captured.err.splitlines()] == [
        f"{v.version_id} -> ssd: {format_size(v.bytes)}" for v in two_partitions]


def test_tier_write_shows_the_upload_to_the_object_tier(letl_env, objectstore, object_tier, capsys, monkeypatch):
    from letl.cli import main as cli
    from letl.lake.config import format_size

    object_tier(objectstore)
    monkeypatch.setenv("LETL_PROGRESS_BYTES", "1KiB")
    source = letl_env["landing"] / "blob.bin"
    source.write_bytes(b"x" * 300_000)
    assert cli.main(["tier", "write", str(source), "team.blobs", "--to", "cortx"]) == 0
    captured = capsys.readouterr()
    assert captured.err.split(" in ")[0] == f"{source} -> team.blobs: {format_size(300_000)}"
    assert "team.blobs version" in captured.out and "on cortx" in captured.out
