"""Stage timing and progress reporting shared by the pipeline, the CLI and the benchmarks."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol


class ProgressSink(Protocol):
    def stage_started(self, stage: str) -> None: ...
    def stage_message(self, stage: str, message: str) -> None: ...
    def stage_finished(self, stage: str, seconds: float, detail: str, ok: bool = True) -> None: ...


@dataclass
class StageClock:
    """Times named stages, in order, and forwards progress to an optional sink (the CLI's console)."""

    sink: ProgressSink | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    _details: dict[str, str] = field(default_factory=dict)
    _failed: set[str] = field(default_factory=set)

    @contextmanager
    def stage(self, name: str) -> Iterator[Callable[[str], None]]:
        """``with clock.stage("schedule") as say: ... say("window 3/9")``; ``say`` also sets the detail
        printed when the stage ends (the last message wins); ``say(..., ok=False)`` marks the stage as failed
        (a validation that found a mismatch), which the console shows with a cross instead of a tick."""
        if self.sink:
            self.sink.stage_started(name)
        start = time.perf_counter()

        def say(message: str, ok: bool = True) -> None:
            self._details[name] = message
            if not ok:
                self._failed.add(name)
            if self.sink:
                self.sink.stage_message(name, message)

        try:
            yield say
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
        if self.sink:
            self.sink.stage_finished(name, elapsed, self._details.get(name, ""), ok=name not in self._failed)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())
