"""Runs the rows of concurrent requests in shared batches, fairly.

Each HTTP request becomes one *job* (a list of rows). A single background task waits
for the first job, collects others for ``wait_s``, then fills each model call of at
most ``max_batch`` rows **round-robin across the waiting jobs** (one row of each job in
turn), so a request of one row rides in the next batch however many rows a flood of
large requests has queued. The model runs in one worker thread; the event loop keeps
answering meanwhile.

Bounds and failures:

- at most ``max_queue`` unfinished jobs wait beside the running batch; beyond that
  :class:`QueueFull` is raised (HTTP 503);
- a job whose client went away (its future cancelled) is dropped before its next row;
- when a batch fails, each of its jobs is run again alone, so a bad row fails only its
  own request;
- :meth:`stop` fails what is still waiting and does not wait for a running model call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The server has ``max_queue`` requests waiting already."""


@dataclass(eq=False)
class _Job:
    rows: list[Any]
    future: asyncio.Future
    outputs: list[Any] = field(default_factory=list)
    sent: int = 0  # rows handed to a model call so far
    done: int = 0  # rows answered

    def __post_init__(self) -> None:
        self.outputs = [None] * len(self.rows)


class Batcher:
    def __init__(self, run_rows: Callable[[list[Any]], list[Any]], *, max_batch: int = 8,
                 max_queue: int = 64, wait_s: float = 0.005):
        self.run_rows = run_rows
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.wait_s = wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()  # jobs not yet seen by the loop
        self.active: list[_Job] = []  # jobs being answered, in round-robin order
        self.running: set[_Job] = set()  # jobs with rows in the running model call
        self.batches_run = 0  # for tests and /health: how many model calls were made
        self.rows_run = 0
        self._task: asyncio.Task | None = None
        self._next = 0  # round-robin position in ``active``
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: asyncio.Future | None = None

    def busy(self) -> bool:
        """Whether a model call is still computing (possibly after :meth:`stop`)."""
        return self._inflight is not None and not self._inflight.done()

    def pending(self) -> int:
        """Unfinished jobs, the ones in the running model call excepted."""
        return self.queue.qsize() + sum(1 for j in self.active if j not in self.running)

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sftlab-model")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self.queue.empty():
            self.active.append(self.queue.get_nowait())
        for job in self.active:
            job.future.cancel()
        self.active.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, rows: list[Any]) -> list[Any]:
        """Queue ``rows`` and wait for their outputs (same order)."""
        if self.pending() >= self.max_queue:
            raise QueueFull
        job = _Job(rows, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        return await job.future  # a cancelled caller cancels the future: the job is dropped

    async def _loop(self) -> None:
        while True:
            if not self.active:
                await self._collect()
            while not self.queue.empty():
                self.active.append(self.queue.get_nowait())
            self.active = [j for j in self.active if not j.future.done()]
            batch = self._pick()
            if batch:
                await self._run(batch)

    async def _collect(self) -> None:
        """Wait for a job, then for more during ``wait_s`` (or until a batch is full)."""
        self.active.append(await self.queue.get())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while sum(len(j.rows) for j in self.active) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                self.active.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break

    def _pick(self) -> list[tuple[_Job, int]]:
        """Up to ``max_batch`` (job, row index) pairs, one row per job in turn."""
        batch: list[tuple[_Job, int]] = []
        while len(batch) < self.max_batch:
            open_jobs = [j for j in self.active if j.sent < len(j.rows)]
            if not open_jobs:
                break
            for _ in range(len(self.active)):
                job = self.active[self._next % len(self.active)]
                self._next += 1
                if job.sent < len(job.rows):
                    batch.append((job, job.sent))
                    job.sent += 1
                    if len(batch) == self.max_batch:
                        break
        return batch

    async def _run(self, batch: list[tuple[_Job, int]]) -> None:
        self.running = {job for job, _ in batch}
        try:
            outputs = await self._call([job.rows[i] for job, i in batch])
        except Exception:  # noqa: BLE001 - find the request that broke it, fail only that one
            log.warning("a batch of %d rows failed; running its requests one by one", len(batch))
            await self._isolate(batch)
        else:
            self._deliver(batch, outputs)
        finally:
            self.running = set()

    async def _call(self, rows: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        self._inflight = loop.run_in_executor(self._pool, self.run_rows, rows)
        outputs = await asyncio.shield(self._inflight)
        self.batches_run += 1
        self.rows_run += len(rows)
        return outputs

    async def _isolate(self, batch: list[tuple[_Job, int]]) -> None:
        for job in dict.fromkeys(job for job, _ in batch):
            mine = [(j, i) for j, i in batch if j is job]
            try:
                outputs = await self._call([job.rows[i] for _, i in mine])
            except Exception as err:  # noqa: BLE001 - the error goes to its own request
                log.exception("request of %d rows failed", len(job.rows))
                if not job.future.done():
                    job.future.set_exception(err)
                self.active.remove(job)
            else:
                self._deliver(mine, outputs)

    def _deliver(self, batch: list[tuple[_Job, int]], outputs: list[Any]) -> None:
        for (job, i), out in zip(batch, outputs, strict=True):
            job.outputs[i] = out
            job.done += 1
            if job.done == len(job.rows):
                if not job.future.done():
                    job.future.set_result(job.outputs)
                if job in self.active:
                    self.active.remove(job)
