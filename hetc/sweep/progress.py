"""The sweep's progress bar on stderr: points done of the total, how many failed, elapsed time and ETA."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn


class SweepProgress:
    """A ``run_sweep`` progress callback drawing a rich bar; ``enabled=False`` draws nothing."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled
        self.failed = 0
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(),
                             TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not enabled)
        self._task: Any = None
        self._note = ""

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "start":
            self._bar.start()
            skipped = event["skipped"]
            self._note = f" ({skipped} done before)" if skipped else ""
            self._task = self._bar.add_task("sweep" + self._note,
                                            total=event["total"] - skipped, failed=0)
        elif event["event"] == "ray":   # a local Ray is up (the driver ran points while it started)
            cpus = f"{event['cpus']} CPU{'s' if event['cpus'] > 1 else ''}"
            cpus += " + the driver" if event.get("driver") else ""
            self._bar.update(self._task, description=f"sweep on Ray ({cpus}){self._note}")
        elif event["event"] == "point":
            self.failed += event["row"].get("status") != "ok"
            self._bar.update(self._task, advance=1, failed=self.failed)

    def stop(self) -> None:
        self._bar.stop()
