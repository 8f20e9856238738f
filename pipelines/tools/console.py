"""Tables and progress bars for people, with ``rich`` (one library for both).

Tables go to stdout (a command's result); progress bars to stderr, and only on a terminal (a
log file or a CI run gets the jobs' log lines instead of bar redraws).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def table(rows: Iterable[Mapping[str, Any]], *, title: str | None = None,
          columns: Sequence[str] | None = None) -> Table:
    """A table of ``rows`` (dicts), columns in the first row's order unless given; numbers right-aligned."""
    rows = list(rows)
    names = list(columns or (rows[0].keys() if rows else []))
    t = Table(title=title, title_justify="left", header_style="bold")
    for name in names:
        numeric = bool(rows) and all(isinstance(r.get(name), int | float) or r.get(name) is None for r in rows)
        t.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for r in rows:
        t.add_row(*("" if r.get(n) is None else f"{r[n]:,}" if isinstance(r[n], int) and not isinstance(r[n], bool)
                    else str(r[n]) for n in names))
    return t


def render(*renderables: Any, width: int = 160) -> str:
    """Plain text of ``renderables`` (no colour codes), e.g. for a test or a log."""
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False).print(*renderables)
    return buf.getvalue()


def show(*renderables: Any) -> None:
    """Print to stdout (colours on a terminal only)."""
    Console(file=sys.stdout).print(*renderables)


class Bar:
    """A progress bar on stderr when it is a terminal and ``enabled``; otherwise it does nothing."""

    def __init__(self, description: str, total: float | None, *, enabled: bool = True) -> None:
        self._progress: Progress | None = None
        if enabled and sys.stderr.isatty():
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                      console=Console(file=sys.stderr), transient=False)
            self._task = self._progress.add_task(description, total=total, note="")
            self._progress.start()

    def update(self, advance: float, note: str = "") -> None:
        """Move the bar by ``advance``; ``note`` replaces the text after the counts."""
        if self._progress is not None:
            self._progress.update(self._task, advance=advance, note=note)

    def close(self) -> None:
        """Stop redrawing (the last state stays on the terminal)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
