"""Overlap a one-process pipeline's batches: each stage on its own thread and CUDA stream.

A Python-backend model instance runs one ``execute`` at a time, so a model that decodes,
detects and answers inside ``execute`` leaves the hardware JPEG decoder idle while the
detector runs and the detector idle while the next batch decodes; overlapping needed
several instances, i.e. several processes whose CUDA contexts time-slice the GPU
(perf/RESULTS.md, session 6: 3 instances 1,103 frames/s on an H200, 4 no more; overlapped,
session 7 on an H100: 1,248 against 1,111 with 8 client processes). Here ``execute``
only reads its requests and hands the batch to the first stage thread; each request is
answered by its own response sender (the Python backend allows that in default mode since
24.06) when the last stage is done with it. The stages of one process then overlap on one
CUDA context, each on its own stream.

Back-pressure: a hand-over between stages waits until the next stage takes the batch.
In front of the first stage either the same (``execute`` returns only when that stage
is free; meanwhile Triton's dynamic batcher gathers the next batch), or, with a
:class:`Gather`, the first stage takes every batch waiting for it as one, up to its
largest batch, and ``execute`` returns at once while less than that waits
(:mod:`camdet.triton_models.portable.gather`: one batch time less of waiting).

Every request gets exactly one final response: its stage's answer, its own error, or, if
a stage fails unexpectedly, an ``INTERNAL`` error without a traceback (which goes to the
server log), as :func:`~camdet.triton_models.common.guarded_execute` answers a batch.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import triton_python_backend_utils as pb_utils

from camdet.triton_models.common import internal_error_response
from camdet.triton_models.portable.gather import Waiting

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


@dataclass
class Batch:
    """One ``execute``'s requests on their way through the stages.

    Attributes:
        senders: Per request, its response sender; None once it is answered.
        work: What the stages hand on (each stage reads and replaces it).
        ready: CUDA event recorded after the previous stage's work, which the next
            stage's stream waits for (None on the CPU).
    """

    senders: list[Any | None]
    work: Any = None
    ready: Any = field(default=None, repr=False)

    @property
    def pending(self) -> bool:
        """Whether a request of the batch still waits for its response."""
        return any(sender is not None for sender in self.senders)

    def answer(self, index: int, response: pb_utils.InferenceResponse) -> None:
        """Send request ``index``'s one and final response."""
        sender, self.senders[index] = self.senders[index], None
        if sender is not None:
            sender.send(response, flags=FINAL)

    def answer_all(
        self, responses: dict[int, pb_utils.InferenceResponse], pool: Executor | None = None
    ) -> None:
        """Send each request's final response, several at a time on ``pool``.

        Raises:
            Exception: The first failed send's error, once every other response was sent
                (a cancelled request does not keep the others from their answers).
        """
        if pool is None or len(responses) < 2:
            for index, response in responses.items():
                self.answer(index, response)
            return
        sends = [pool.submit(self.answer, i, response) for i, response in responses.items()]
        errors = [send.exception() for send in sends]  # waits for every send
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def fail(self, model: str, exc: BaseException) -> None:
        """Answer every request not answered yet with an ``INTERNAL`` error.

        A sender that cannot send (its request was cancelled) does not keep the others
        from being answered, nor end the stage thread that called this.
        """
        for index in range(len(self.senders)):
            with contextlib.suppress(Exception):
                self.answer(index, internal_error_response(model, exc))


Stage = Callable[[Batch], None]
"""A stage: reads ``batch.work``, answers what it can, leaves ``batch.work`` for the next."""


@dataclass(frozen=True)
class Gather:
    """How the first stage takes the batches waiting for it as one batch.

    Attributes:
        frames: A batch's work -> its frames (a request may hold several).
        join: The works of several batches, in the order ``execute`` read them, and
            each one's first request index in the joined batch -> the joined work
            (whose request indices are the joined batch's).
        max_frames: The most frames of a joined batch: the first step's largest batch.
    """

    frames: Callable[[Any], int]
    join: Callable[[list[Any], list[int]], Any]
    max_frames: int

    def joined(self, batches: list[Batch]) -> Batch:
        """``batches`` as one: their requests in order, their works joined."""
        sizes = [len(batch.senders) for batch in batches[:-1]]
        offsets = list(itertools.accumulate(sizes, initial=0))
        senders = [sender for batch in batches for sender in batch.senders]
        return Batch(senders, self.join([batch.work for batch in batches], offsets))


class Stages:
    """Threads that run batches through ``stages`` in order, one batch per stage at a time.

    Args:
        model: The model's name (for errors and the log).
        stages: The stage functions, first to last; the last one answers the batch.
        device: A torch CUDA device to give each thread its own stream on, or None.
        overlap: False: one thread runs every stage of a batch before taking the next
            (the config's ``overlap: "no"``).
        gather: The first stage takes the batches waiting for it as one (None: one
            ``execute``'s batch at a time, handed over when that stage is free).
    """

    def __init__(
        self,
        model: str,
        stages: Sequence[Stage],
        device: Any = None,
        overlap: bool = True,
        gather: Gather | None = None,
    ) -> None:
        self.model = model
        self.device = device
        stages = list(stages) if overlap else [_one_after_another(stages)]
        # Rendezvous hand-overs, one per stage; gathering, the first stage's is unused.
        self.inboxes: list[queue.Queue[Batch | None]] = [queue.Queue(1) for _ in stages]
        self.waiting = (
            None
            if gather is None
            else Waiting(lambda batch: gather.frames(batch.work), gather.joined, gather.max_frames)
        )
        takes = [self.waiting.take if self.waiting else _taker(self.inboxes[0])]
        takes += [_taker(inbox) for inbox in self.inboxes[1:]]
        outboxes = [*self.inboxes[1:], None]
        self.threads = [
            threading.Thread(
                target=self._serve,
                args=(stage, take, outbox),
                name=f"{model}-stage{i}",
                daemon=True,
            )
            for i, (stage, take, outbox) in enumerate(zip(stages, takes, outboxes, strict=True))
        ]
        for thread in self.threads:
            thread.start()

    @contextlib.contextmanager
    def reading(self, batch: Batch) -> Iterator[None]:
        """Around ``execute``'s reading of ``batch``: an exception fails its requests.

        The exception goes to the server log; ``execute`` then returns normally, since
        every request of the batch has had its (error) response.
        """
        try:
            yield
        except Exception as exc:
            self._log_failure(batch)
            batch.fail(self.model, exc)

    def submit(self, batch: Batch) -> None:
        """Hand ``batch`` to the first stage.

        Returns once that stage has taken it, or, gathering, once fewer frames than its
        largest batch wait for it.
        """
        self._to_first(batch)

    def close(self) -> None:
        """Let every batch already submitted finish, then stop the threads."""
        self._to_first(None)
        for thread in self.threads:
            thread.join()

    def _to_first(self, batch: Batch | None) -> None:
        if self.waiting is not None:
            self.waiting.put(batch)
        else:
            _hand_over(self.inboxes[0], batch)

    def _serve(
        self, stage: Stage, take: Callable[[], Batch | None], outbox: queue.Queue | None
    ) -> None:
        """One stage's loop: take a batch, run the stage on it, hand it on."""
        stream = self._stream()
        while True:
            batch = take()
            if batch is None:
                if outbox is not None:
                    _hand_over(outbox, None)
                return
            try:
                if batch.ready is not None:
                    stream.wait_event(batch.ready)
                stage(batch)
                batch.ready = self._record(stream)
            except Exception as exc:
                self._log_failure(batch)
                batch.fail(self.model, exc)
                continue
            if outbox is not None and batch.pending:
                _hand_over(outbox, batch)

    def _log_failure(self, batch: Batch) -> None:
        pb_utils.Logger.log_error(
            f"{self.model}: batch of {len(batch.senders)} failed:\n{traceback.format_exc()}"
        )

    def _stream(self) -> Any:
        """This thread's own CUDA stream (None on the CPU).

        The CUDA device is per thread: without ``set_device`` a thread works on GPU 0.
        A stream of its own keeps this stage's kernels from queueing behind the others'.
        """
        if self.device is None:
            return None
        import torch

        torch.cuda.set_device(self.device)
        stream = torch.cuda.Stream(self.device)
        torch.cuda.set_stream(stream)
        return stream

    def _record(self, stream: Any) -> Any:
        """An event after this stage's work on ``stream``, for the next stage to wait on."""
        if stream is None:
            return None
        import torch

        event = torch.cuda.Event()
        event.record(stream)
        return event


def _one_after_another(stages: Sequence[Stage]) -> Stage:
    """The stages as one, each run while a request of the batch still waits."""

    def run(batch: Batch) -> None:
        for stage in stages:
            if not batch.pending:  # e.g. the decoder refused every frame: all answered
                return
            stage(batch)

    return run


def _taker(inbox: queue.Queue[Batch | None]) -> Callable[[], Batch | None]:
    """A stage's take from a rendezvous inbox: the hand-over completes as it takes."""

    def take() -> Batch | None:
        batch = inbox.get()
        inbox.task_done()  # the sender may go on
        return batch

    return take


def _hand_over(inbox: queue.Queue, item: Batch | None) -> None:
    """Put ``item`` and wait until the consumer has taken it (a rendezvous)."""
    inbox.put(item)
    inbox.join()
