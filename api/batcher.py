"""Micro-batching: detections that arrive together are scored as one batch.

Scoring a batch of B images costs far less than B single calls (the per-step overhead of the inversion is paid
once), so under load throughput grows with the number of waiting requests. A request's image is decoded in its
own handler, then queued; one scoring loop (a task in the service's lifespan) takes the first waiting image,
gathers more for at most `wait_s` (or until `max_batch`), scores them together in a worker thread and hands each
request its own result. Every feature is per-image independent (the detector's contract), so an answer does not
depend on its batch-mates. The caller holds a scoring slot per image (the in-flight limit counts images); the
loop gives it back once the image is scored, even when the client has gone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import torch

from detector.imageio import PreparedImage
from detector.runtime import Detector, ScoreResult

from .memory import trim


@dataclass(eq=False)
class _Job:
    prep: PreparedImage
    explain: bool
    decode_ms: float
    release: Callable[[], None] | None       # gives the caller's scoring slot back once the image is scored
    done: anyio.Event = field(default_factory=anyio.Event)
    result: ScoreResult | None = None
    error: BaseException | None = None


class Batcher:
    def __init__(self, detector: Detector, *, max_batch: int = 16, wait_s: float = 0.005, on_batch=None,
                 trim_when_idle: bool = True):
        if max_batch < 1 or wait_s < 0:
            raise ValueError("max_batch must be >= 1 and wait_s >= 0")
        self.detector, self.max_batch, self.wait_s, self.on_batch = detector, max_batch, wait_s, on_batch
        self._send, self._recv = anyio.create_memory_object_stream[_Job](max_buffer_size=math.inf)
        self._worker = anyio.CapacityLimiter(1)  # one scoring thread at a time (and so, mostly, the same one)
        self.trim_when_idle = trim_when_idle  # hand freed memory back when the queue runs empty (api/memory.py)
        self.trims = 0

    async def score(self, prep: PreparedImage, *, explain: bool = False, decode_ms: float = 0.0,
                    release: Callable[[], None] | None = None) -> ScoreResult:
        """Queue one decoded image and wait for its result. `release` (the caller's scoring slot) passes to the
        loop as soon as this is called: the loop calls it once the image is scored, whatever happens to the
        caller (the queue is unbounded, so queueing never waits: nothing can cancel between hand-over and queue;
        the in-flight limit bounds it)."""
        job = _Job(prep=prep, explain=explain, decode_ms=decode_ms, release=release)
        self._send.send_nowait(job)
        await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    async def run(self) -> None:
        """The scoring loop (run it in a task group; cancel it to stop)."""
        while True:
            jobs = [await self._recv.receive()]
            with anyio.move_on_after(self.wait_s):
                while len(jobs) < self.max_batch:
                    jobs.append(await self._recv.receive())
            await self._score(jobs)

    async def _score(self, jobs: list[_Job]) -> None:
        explain = any(j.explain for j in jobs)
        t0 = time.perf_counter()
        try:
            results = await anyio.to_thread.run_sync(lambda: self.detector.score_tensors(
                torch.stack([j.prep.tensor for j in jobs]), preps=[j.prep for j in jobs],
                sources=[j.prep.source for j in jobs], explain=explain, decode_ms=[j.decode_ms for j in jobs]),
                limiter=self._worker)
            for j, r in zip(jobs, results, strict=True):
                if not j.explain:
                    r.evidence = {}
                j.result = r
        except Exception as exc:  # every waiting request gets the error (mapped to HTTP in one place)
            for j in jobs:
                j.error = exc
        finally:
            for j in jobs:
                if j.release is not None:
                    j.release()
                j.done.set()
            if self.on_batch:
                self.on_batch(len(jobs), time.perf_counter() - t0)
            if self.trim_when_idle and self._recv.statistics().current_buffer_used == 0:
                self.trims += 1
                await anyio.to_thread.run_sync(trim, limiter=self._worker)
