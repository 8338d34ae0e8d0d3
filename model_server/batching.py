"""Dynamic batching, as TF Serving's batching session does it.

Concurrent requests for the same servable and signature queue up; a batch is formed when
it is full (`max_batch_size` rows) or when its oldest request has waited
`batch_timeout_micros` and a batch thread is free. While every batch thread is busy the
open batch keeps filling, so batches grow with load even with a zero timeout. Inputs are
concatenated along dimension 0, the model runs once, and each request gets its rows back.
A request with more rows than `max_batch_size` is split into pieces of at most that many rows
(TF Serving's large batch splitting), which queue and batch like requests of their own; its
answer is their outputs put back together in order. `enable_large_batch_splitting { value:
false }` in the parameters file refuses such a request instead.

The parameters come from TF Serving's text `BatchingParameters` file (the same file the
`tensorflow/serving` container reads with `--batching_parameters_file`), parsed with a
descriptor built here because the `tensorflow-serving-api` wheel does not ship that proto.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_server.status import Code, ServingError

__all__ = [
    "BatchingParameters",
    "BatchStats",
    "Batcher",
    "batching_parameters_message",
    "read_batching_parameters",
]


@dataclass(frozen=True)
class BatchingParameters:
    """The BatchingParameters fields the embedded server honours."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1
    enable_large_batch_splitting: bool = True


@dataclass
class BatchStats:
    """Counters the stats endpoint and the tests read."""

    model_calls: int = 0
    batched_requests: int = 0
    batched_rows: int = 0
    largest_batch: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def record(self, requests: int, rows: int) -> None:
        """Count one model call covering `requests` requests and `rows` rows."""
        self.model_calls += 1
        self.batched_requests += requests
        self.batched_rows += rows
        self.largest_batch = max(self.largest_batch, rows)
        self.batch_sizes[requests] = self.batch_sizes.get(requests, 0) + 1


_message_class: Any = None


def batching_parameters_message() -> Any:
    """The `tensorflow.serving.BatchingParameters` message class (session_bundle_config)."""
    global _message_class
    if _message_class is not None:
        return _message_class
    from google.protobuf import (  # type: ignore[import-untyped]
        descriptor_pb2,
        descriptor_pool,
        message_factory,
        wrappers_pb2,
    )

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    field_type = descriptor_pb2.FieldDescriptorProto
    for number, name, type_name in (
        (1, "max_batch_size", ".google.protobuf.Int64Value"),
        (2, "batch_timeout_micros", ".google.protobuf.Int64Value"),
        (3, "max_enqueued_batches", ".google.protobuf.Int64Value"),
        (4, "num_batch_threads", ".google.protobuf.Int64Value"),
        (5, "thread_pool_name", ".google.protobuf.StringValue"),
        (8, "enable_large_batch_splitting", ".google.protobuf.BoolValue"),
        (9, "max_execution_batch_size", ".google.protobuf.Int64Value"),
    ):
        message.field.add(
            name=name,
            number=number,
            type=field_type.TYPE_MESSAGE,
            type_name=type_name,
            label=field_type.LABEL_OPTIONAL,
        )
    message.field.add(
        name="allowed_batch_sizes",
        number=6,
        type=field_type.TYPE_INT64,
        label=field_type.LABEL_REPEATED,
    )
    message.field.add(
        name="pad_variable_length_inputs",
        number=7,
        type=field_type.TYPE_BOOL,
        label=field_type.LABEL_OPTIONAL,
    )
    pool.Add(file)
    _message_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )
    return _message_class


def read_batching_parameters(path: Path) -> BatchingParameters:
    """Read a TF Serving batching parameters file; raise ValueError naming the problem."""
    from google.protobuf import text_format

    message = batching_parameters_message()()
    try:
        text_format.Parse(path.read_text(), message)
    except OSError as error:
        raise ValueError(f"--batching-parameters-file {path}: {error.strerror}") from None
    except text_format.ParseError as error:
        raise ValueError(f"{path}:{error}") from None
    defaults = BatchingParameters()

    def value(name: str, default: int) -> int:
        return int(getattr(message, name).value) if message.HasField(name) else default

    parameters = BatchingParameters(
        max_batch_size=value("max_batch_size", defaults.max_batch_size),
        batch_timeout_micros=value("batch_timeout_micros", defaults.batch_timeout_micros),
        max_enqueued_batches=value("max_enqueued_batches", defaults.max_enqueued_batches),
        num_batch_threads=value("num_batch_threads", defaults.num_batch_threads),
        enable_large_batch_splitting=(
            bool(message.enable_large_batch_splitting.value)
            if message.HasField("enable_large_batch_splitting")
            else defaults.enable_large_batch_splitting
        ),
    )
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if getattr(parameters, name) < 1:
            raise ValueError(f"{path}: {name} must be >= 1, got {getattr(parameters, name)}")
    if parameters.batch_timeout_micros < 0:
        raise ValueError(
            f"{path}: batch_timeout_micros must be >= 0, got {parameters.batch_timeout_micros}"
        )
    return parameters


class _Task:
    # A plain slotted class: one is made per request on the hot path.
    __slots__ = ("inputs", "rows", "future", "enqueued", "shapes")

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        future: asyncio.Future[dict[str, np.ndarray]],
        enqueued: float,
        shapes: tuple[tuple[str, tuple[int, ...], str], ...],
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.enqueued = enqueued
        self.shapes = shapes


RunBatch = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class Batcher:
    """One batching queue (per servable and signature) sharing a pool of batch threads."""

    def __init__(
        self,
        run: RunBatch,
        parameters: BatchingParameters,
        executor: concurrent.futures.Executor,
        slots: asyncio.Semaphore,
        stats: BatchStats,
        *,
        timeout_seconds: float = math.inf,
    ) -> None:
        self._run = run
        # One timer for the queue head and one per running batch replace a timeout per
        # request: requests leave in order, so the oldest deadline is always at the front.
        self._timeout = timeout_seconds
        self._queue_timer: asyncio.TimerHandle | None = None
        self._parameters = parameters
        self._executor = executor
        self._slots = slots
        self._stats = stats
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._waiting: asyncio.Future[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one request's inputs and wait for its slice of the batch's outputs."""
        rows = _rows(inputs)
        limit = self._parameters.max_batch_size
        if rows > limit and not self._parameters.enable_large_batch_splitting:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Task size {rows} is larger than maximum input batch size {limit}",
            )
        if self._queued_rows + rows > limit * self._parameters.max_enqueued_batches:
            raise ServingError(
                Code.UNAVAILABLE,
                "The batch scheduling queue to which this task was submitted is full",
            )
        if rows <= limit:
            return await self._enqueue(inputs, rows)
        # Every piece is queued before any is awaited, so the pieces of one request leave the
        # queue together (in order) and share its deadline.
        pieces = [
            self._enqueue({name: array[start : start + limit] for name, array in inputs.items()},
                          min(limit, rows - start))
            for start in range(0, rows, limit)
        ]  # fmt: skip
        outputs: list[dict[str, np.ndarray]] = []
        for result in await asyncio.gather(*pieces, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
            outputs.append(result)
        return {name: np.concatenate([piece[name] for piece in outputs]) for name in outputs[0]}

    def _enqueue(
        self, inputs: Mapping[str, np.ndarray], rows: int
    ) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue one task of at most `max_batch_size` rows; its future holds its outputs."""
        loop = asyncio.get_running_loop()
        task = _Task(
            inputs,
            rows,
            loop.create_future(),
            time.monotonic(),
            tuple((name, array.shape[1:], array.dtype.str) for name, array in inputs.items()),
        )
        self._queue.append(task)
        if self._queue_timer is None and self._timeout != math.inf:
            self._queue_timer = loop.call_later(self._timeout, self._expire_queued)
        self._queued_rows += rows
        # Wake the dispatcher only when it has something new to decide: the queue stopped
        # being empty, or the open batch is full.
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            if len(self._queue) == 1 or self._queued_rows >= self._parameters.max_batch_size:
                waiting.set_result(None)
        if self._dispatcher is None:
            self._dispatcher = loop.create_task(self._dispatch())
        return task.future

    async def _wait(self, seconds: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._waiting = loop.create_future()
        handle = None
        if seconds is not None:
            handle = loop.call_later(seconds, _resolve, self._waiting)
        try:
            await self._waiting
        finally:
            if handle is not None:
                handle.cancel()
            self._waiting = None

    async def _dispatch(self) -> None:
        timeout = self._parameters.batch_timeout_micros / 1e6
        limit = self._parameters.max_batch_size
        while True:
            if not self._queue:
                if self._closed:
                    return
                await self._wait(None)
                continue
            await self._slots.acquire()
            # A thread is free: wait for the batch to fill up or for its oldest task's
            # timeout, whichever comes first.
            while self._queue and self._queued_rows < limit:
                remaining = self._queue[0].enqueued + timeout - time.monotonic()
                if remaining <= 0:
                    break
                await self._wait(remaining)
            batch = self._take_batch(limit)
            if not batch:
                self._slots.release()
                continue
            asyncio.get_running_loop().create_task(self._process(batch))

    def _take_batch(self, limit: int) -> list[_Task]:
        batch: list[_Task] = []
        rows = 0
        skipped: list[_Task] = []
        while self._queue:
            task = self._queue.popleft()
            if batch and (task.shapes != batch[0].shapes or rows + task.rows > limit):
                skipped.append(task)
                if rows + task.rows > limit:
                    break
                continue
            batch.append(task)
            rows += task.rows
        # Tasks that could not join (other shapes) keep their place at the head.
        self._queue.extendleft(reversed(skipped))
        self._queued_rows -= rows
        return batch

    async def _process(self, batch: list[_Task]) -> None:
        loop = asyncio.get_running_loop()
        try:
            if len(batch) == 1:
                merged = dict(batch[0].inputs)
            else:
                merged = {
                    name: np.concatenate([t.inputs[name] for t in batch])
                    for name in batch[0].inputs
                }
            rows = sum(t.rows for t in batch)
            self._stats.record(len(batch), rows)
            if self._timeout != math.inf:
                timer = loop.call_later(
                    batch[0].enqueued + self._timeout - time.monotonic(),
                    self._expire_running,
                    batch,
                )
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, merged)
            except BaseException as error:  # every task of the batch fails the same way
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(error)
                return
            finally:
                if self._timeout != math.inf:
                    timer.cancel()
            start = 0
            for task in batch:
                end = start + task.rows
                if not task.future.done():
                    task.future.set_result(
                        {name: value[start:end] for name, value in outputs.items()}
                    )
                start = end
        finally:
            self._slots.release()

    def _expire_queued(self) -> None:
        """Fail the queued requests whose deadline passed; re-arm for the next one."""
        self._queue_timer = None
        expired = time.monotonic() - self._timeout
        while self._queue and self._queue[0].enqueued <= expired:
            task = self._queue.popleft()
            self._queued_rows -= task.rows
            _expire(task)
        if self._queue:
            loop = asyncio.get_running_loop()
            self._queue_timer = loop.call_later(
                self._queue[0].enqueued - expired, self._expire_queued
            )

    def _expire_running(self, batch: list[_Task]) -> None:
        """Fail the requests of a running batch whose deadline passed; re-arm if some wait."""
        expired = time.monotonic() - self._timeout
        pending = [t for t in batch if not t.future.done()]
        for task in pending:
            if task.enqueued <= expired:
                _expire(task)
        later = [t.enqueued for t in pending if t.enqueued > expired]
        if later:
            loop = asyncio.get_running_loop()
            loop.call_later(min(later) - expired, self._expire_running, batch)

    def close(self) -> None:
        """Stop the dispatcher once the queued tasks have been batched and run."""
        self._closed = True
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)


def _expire(task: _Task) -> None:
    if not task.future.done():
        task.future.set_exception(ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded"))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.ndim else 1
