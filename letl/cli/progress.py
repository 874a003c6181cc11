"""Progress of long operations for people: a rich bar on a terminal, sparse plain lines elsewhere.

A log file or CI console must not fill with carriage returns and redraws, so off a terminal a bar
prints at most one line every ``PLAIN_INTERVAL_S`` seconds, plus one line per finished item
(``note``) and one when it ends. The lake library never imports this: its moves and writes take a
``(bytes_done, bytes_total)`` callback, and the CLI turns that into a bar here (``Bar.update``).
"""

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from letl.lake.config import format_size, setting

PLAIN_INTERVAL_S = 5.0
_clock = time.monotonic  # the tests' seam: plain mode's throttle without waiting in real time


def _amount(n: float, unit: str) -> str:
    return format_size(n) if unit == "B" else f"{n:,.0f} {unit}"


def _rate(n: float, seconds: float, unit: str) -> str:
    if seconds <= 0:
        return ""
    return f"{format_size(n / seconds)}/s" if unit == "B" else f"{n / seconds:,.0f} {unit}/s"


class _AmountColumn(ProgressColumn):
    """Done / total in LETL's one size convention (rich's own columns use decimal units)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        done = _amount(task.completed, self.unit)
        return Text(done if task.total is None else f"{done} / {_amount(task.total, self.unit)}")


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if not speed else _rate(speed, 1.0, self.unit))


class Bar:
    """One operation's progress. ``advance``/``update`` may be called from several threads (an upload's
    parts finish on a pool)."""

    def __init__(self, label: str, total: int | None, unit: str, stream: TextIO, rich: Progress | None):
        self.label, self.total, self.unit, self.stream = label, total, unit, stream
        self.done = 0
        self._rich = rich
        self._task = rich.add_task(label, total=total) if rich else None
        self._lock = threading.Lock()
        self._started = self._last_line = _clock()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            self._show()

    def update(self, done: int, total: int | None = None) -> None:
        """Absolute progress, the shape of the lake's ``on_progress(bytes_done, bytes_total)`` callback."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
            self._show()

    def note(self, text: str) -> None:
        """A finished item: its own line in both modes, above the bar on a terminal."""
        if self._rich:
            self._rich.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self._write(text)

    def _show(self) -> None:
        if self._rich:
            self._rich.update(self._task, completed=self.done, total=self.total)
            return
        now = _clock()
        if now - self._last_line >= PLAIN_INTERVAL_S:
            self._last_line = now
            self._write(f"{self.label}: {self._fraction()}")

    def _fraction(self) -> str:
        done = _amount(self.done, self.unit)
        if not self.total:
            return done
        return f"{done} / {_amount(self.total, self.unit)} ({100 * self.done / self.total:.0f}%)"

    def _finish(self) -> None:
        if self._rich:
            return
        elapsed = _clock() - self._started
        rate = _rate(self.done, elapsed, self.unit)
        self._write(f"{self.label}: {_amount(self.done, self.unit)} in {elapsed:.1f} s"
                    + (f" ({rate})" if rate else ""))

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


@contextmanager
def progress(label: str, total: int | None = None, unit: str = "B", stream: TextIO | None = None) -> Iterator[Bar]:
    """A bar for one operation on ``stream`` (default stderr, so that stdout stays the command's result).

    ``unit="B"`` shows sizes with ``format_size``; any other unit is a count (``rows``, ``months``).
    """
    stream = stream if stream is not None else sys.stderr
    if not _is_terminal(stream):
        bar = Bar(label, total, unit, stream, None)
        yield bar
        bar._finish()
        return
    console = Console(file=stream, force_terminal=True)
    # stdout lines printed meanwhile go above the bar, but only when stdout is that terminal too:
    # a piped stdout must keep every line of the command's result
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), _AmountColumn(unit),
               _RateColumn(unit), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, redirect_stdout=_is_terminal(sys.stdout),
                  redirect_stderr=False) as bar_display:
        yield Bar(label, total, unit, stream, bar_display)


@contextmanager
def file_progress(label: str, stream: TextIO | None = None) -> Iterator[Callable[[int, int | None], None]]:
    """The ``on_progress(bytes_done, bytes_total)`` callback for one move or write: a bar appears once
    the copy's total is known to be at least ``LETL_PROGRESS_BYTES``, so that small files, the most
    of them, add no line."""
    threshold = setting("LETL_PROGRESS_BYTES")
    with ExitStack() as stack:
        bar: list[Bar] = []

        def on_progress(done: int, total: int | None) -> None:
            if not bar and total is not None and total >= threshold:
                bar.append(stack.enter_context(progress(label, total, stream=stream)))
            if bar:
                bar[0].update(done, total)

        yield on_progress


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
