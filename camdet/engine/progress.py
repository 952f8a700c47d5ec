"""TensorRT's build phases as rich progress bars; Ctrl-C cancels the build."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class PhaseTracker:
    """Nested build phases of TensorRT's progress callbacks, mapped onto rich tasks.

    Kept free of TensorRT so it can be tested without it; the ``IProgressMonitor``
    subclass in :func:`make_progress_monitor` only forwards to it.
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}
        self._depth: dict[str, int] = {}

    def start(self, phase: str, parent: str | None, steps: int) -> None:
        """A phase began (under ``parent``, if any) with ``steps`` steps."""
        depth = self._depth.get(parent, -1) + 1 if parent is not None else 0
        self._depth[phase] = depth
        self._tasks[phase] = self._progress.add_task("  " * depth + phase, total=max(steps, 1))

    def step(self, phase: str, step: int) -> None:
        """Step ``step`` (0-based) of ``phase`` completed."""
        if phase in self._tasks:
            self._progress.update(self._tasks[phase], completed=step + 1)

    def finish(self, phase: str) -> None:
        """``phase`` ended."""
        task = self._tasks.pop(phase, None)
        self._depth.pop(phase, None)
        if task is not None:
            self._progress.remove_task(task)


def make_progress_monitor(trt: ModuleType, tracker: PhaseTracker) -> Any:
    """A ``trt.IProgressMonitor`` forwarding to ``tracker``; Ctrl-C cancels the build."""

    class RichProgressMonitor(trt.IProgressMonitor):
        """TensorRT build phases as rich progress bars."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.cancelled = False

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            """Forward a phase start."""
            try:
                tracker.start(phase_name, parent_phase, num_steps)
            except KeyboardInterrupt:
                self.cancelled = True

        def step_complete(self, phase_name: str, step: int) -> bool:
            """Forward a step; returning False cancels the build."""
            try:
                tracker.step(phase_name, step)
            except KeyboardInterrupt:
                self.cancelled = True
            return not self.cancelled

        def phase_finish(self, phase_name: str) -> None:
            """Forward a phase end."""
            try:
                tracker.finish(phase_name)
            except KeyboardInterrupt:
                self.cancelled = True

    return RichProgressMonitor()
