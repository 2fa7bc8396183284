"""Console output for the CLI: stage progress on stderr (so ``--json`` keeps stdout clean) and tables."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.status import Status

stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


class ConsoleProgress:
    """A ProgressSink that shows a spinner while a stage runs and one line with its time when it ends."""

    def __init__(self, console: Console = stderr, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._status: Status | None = None

    def stage_started(self, stage: str) -> None:
        if self.enabled:
            self._status = self.console.status(f"{stage}...")
            self._status.start()

    def stage_message(self, stage: str, message: str) -> None:
        if self._status is not None:
            self._status.update(f"{stage}: {message}")

    def stage_finished(self, stage: str, seconds: float, detail: str, ok: bool = True) -> None:
        self.stop()
        if self.enabled:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self.console.print(f"{mark} {stage:<9} {seconds:7.2f} s  {escape(detail)}", soft_wrap=True)

    def stop(self) -> None:
        """Remove the spinner (a stage that raised, or Ctrl-C, never reaches stage_finished)."""
        if self._status is not None:
            self._status.stop()
            self._status = None
