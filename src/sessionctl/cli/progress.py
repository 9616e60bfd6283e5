"""A progress bar on stderr for runs longer than a moment, and only on a terminal."""

import sys
import time

from .. import render

#: Runs shorter than this show no bar at all.
DELAY_S = 0.5


class Progress:
    def __init__(self, enabled: bool, label: str):
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label
        self.started = time.monotonic()
        self._bar = None
        self._task = None

    def update(self, examined: int, removed: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self.started < DELAY_S:
                return
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=render.rich_console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label)
        self._bar.update(
            self._task, description=f"{self.label}: {examined} examined, {removed} removed"
        )

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
