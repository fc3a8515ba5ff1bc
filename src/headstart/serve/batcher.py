"""Micro-batching: requests that arrive together run through ONNX Runtime as one batch.

A worker takes the first waiting input and everything else already waiting (never more than
`max_batch`); an input that arrives alone waits up to `window_ms` for others. The batch runs in
a worker thread so the event loop keeps accepting requests. While one batch runs, the next one
gathers, so under load batches fill by themselves. `max_batch=1` turns batching off (one input per run).
Inputs whose request has given up (a timeout) are dropped before they run.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

log = logging.getLogger("headstart.serve")


class MicroBatcher:
    def __init__(self, run: Callable[[list], list], *, max_batch: int = 16,
                 window_ms: float = 5.0) -> None:
        self.run = run
        self.max_batch = max(1, int(max_batch))
        self.window = max(0.0, float(window_ms)) / 1000.0
        self._loop = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # batches run, and inputs in them: for /health and the benchmark
        self.inputs = 0

    def _ensure_worker(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._worker())
        return self._queue

    async def submit(self, item):
        """The model's output row for one input."""
        queue = self._ensure_worker()
        fut = asyncio.get_running_loop().create_future()
        await queue.put((item, fut))
        return await fut

    async def _collect(self, queue: asyncio.Queue) -> list:
        """The first waiting input and every other one already waiting. Only a lone input
        waits up to the window for company: under load the queue refills while a batch runs,
        and waiting would leave the cores idle (measured: a 5 ms wait cost 40% of the
        throughput of a 64 px model on 2 cores)."""
        batch = [await queue.get()]
        while len(batch) < self.max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        if len(batch) == 1 and self.max_batch > 1 and self.window > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.window
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except asyncio.TimeoutError:
                    break
        return [(item, fut) for item, fut in batch if not fut.done()]

    async def _worker(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(queue)
            if not batch:
                continue
            try:
                rows = await loop.run_in_executor(None, self.run, [item for item, _ in batch])
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                log.exception("model run failed")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.inputs += len(batch)
            for (_, fut), row in zip(batch, rows):
                if not fut.done():
                    fut.set_result(row)
