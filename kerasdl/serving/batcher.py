"""Server-side batching: concurrent requests to one signature run as one batch.

The scheme is TF Serving's basic batch scheduler (``--enable_batching``): requests wait in a queue
per (servable, signature, example shape), and at most ``num_batch_threads`` batches run at once.
When a batch thread is free, a batch takes every queued request (up to ``max_batch_size``
examples) and, if ``batch_timeout`` > 0, waits up to that long for more. While the batch threads
are busy the queue keeps filling, so batches grow with load even with a zero timeout, and an idle
server answers a lone request at once. Outputs are split back by row counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future = field(repr=False)


RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class Batcher:
    """Gathers concurrent requests into batches and runs them in a thread pool.

    Args:
        executor: the thread pool that runs the TensorFlow calls.
        max_batch_size: the most examples in one batch.
        batch_timeout: seconds a batch waits for more requests after its first one.
        num_batch_threads: how many batches may run at once.

    Example:
        >>> batcher = Batcher(pool, max_batch_size=32, batch_timeout=0.0)
        >>> outputs = await batcher.submit(key, signature, {"images": x})
    """

    def __init__(
        self,
        executor: Executor,
        max_batch_size: int = 32,
        batch_timeout: float = 0.0,
        num_batch_threads: int = 2,
    ) -> None:
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self._slots = asyncio.Semaphore(num_batch_threads)
        self._queues: dict[Any, asyncio.Queue[_Task]] = {}
        self._workers: dict[Any, asyncio.Task] = {}
        self._running: set[asyncio.Task] = set()
        self.batches_run = 0
        self.examples_run = 0

    async def submit(self, key: Any, fn: RunFn, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Queue one request (``inputs`` batch first) and wait for its slice of a batch's outputs.

        ``key`` identifies requests that may share a batch (same servable and signature: the
        servable object itself, not its ``id()``, which a later version could reuse once the
        first is freed while its queue still runs); the example shape is added to it, so only
        same-shaped requests are concatenated.
        """
        rows = next(iter(inputs.values())).shape[0]
        if rows >= self.max_batch_size:  # already a full batch: no point waiting
            loop = asyncio.get_running_loop()
            async with self._slots:
                return await loop.run_in_executor(self.executor, fn, inputs)
        shape_key = tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(inputs.items()))
        qkey = (key, shape_key)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(qkey, asyncio.Queue())
        queue.put_nowait(_Task(inputs, rows, future))
        if qkey not in self._workers:
            self._workers[qkey] = asyncio.create_task(self._gather(qkey, fn))
        return await future

    async def _gather(self, qkey: Any, fn: RunFn) -> None:
        queue = self._queues[qkey]
        carry: _Task | None = None
        batch: list[_Task] = []
        try:
            while True:
                if carry is None and queue.empty():
                    return  # idle: the next submit starts a new worker
                first = carry or queue.get_nowait()
                carry = None
                # Wait for a free batch thread: requests arriving meanwhile join this batch.
                await self._slots.acquire()
                batch, rows = [first], first.rows
                deadline = time.monotonic() + self.batch_timeout
                while rows < self.max_batch_size:
                    if not queue.empty():
                        task = queue.get_nowait()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        try:
                            task = await asyncio.wait_for(queue.get(), remaining)
                        except TimeoutError:
                            break
                    if rows + task.rows > self.max_batch_size:
                        carry = task
                        break
                    batch.append(task)
                    rows += task.rows
                run = asyncio.create_task(self._run(batch, fn))
                self._running.add(run)
                run.add_done_callback(self._running.discard)
                batch = []
        finally:
            del self._workers[qkey]
            for task in [*batch, *([carry] if carry else [])]:  # cancelled: fail, never drop
                if not task.future.done():
                    task.future.cancel()
            if queue.empty():
                self._queues.pop(qkey, None)

    async def _run(self, batch: list[_Task], fn: RunFn) -> None:
        try:
            loop = asyncio.get_running_loop()
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
            try:
                outputs = await loop.run_in_executor(self.executor, fn, inputs)
            except Exception as err:  # noqa: BLE001 - answered to the waiting requests
                # One bad request (say, a corrupt image) must not fail the others: rerun each alone.
                for t in batch:
                    try:
                        result = err if len(batch) == 1 else None
                        if result is None:
                            out = await loop.run_in_executor(self.executor, fn, t.inputs)
                    except Exception as own:  # noqa: BLE001
                        result = own
                    if t.future.done():
                        continue
                    if result is not None:
                        t.future.set_exception(result)
                    else:
                        t.future.set_result(out)
                return
            self.batches_run += 1
            self.examples_run += sum(t.rows for t in batch)
            start = 0
            for t in batch:
                if not t.future.done():
                    t.future.set_result({k: v[start : start + t.rows] for k, v in outputs.items()})
                start += t.rows
        finally:
            self._slots.release()
