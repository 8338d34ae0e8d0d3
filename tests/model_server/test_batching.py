"""The batch scheduler, with a fake model that records its calls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from model_server.batching import (
    Batcher,
    BatchingParameters,
    BatchStats,
    read_batching_parameters,
)
from model_server.status import Code, ServingError

REPO = Path(__file__).resolve().parents[2]


class FakeModel:
    """Doubles its input; remembers the batch size of every call."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True)


def make_batcher(
    model: FakeModel, executor: concurrent.futures.Executor, **parameters: int | bool
) -> tuple[Batcher, BatchStats]:
    stats = BatchStats()
    settings = BatchingParameters(**parameters)
    batcher = Batcher(
        model, settings, executor, asyncio.Semaphore(settings.num_batch_threads), stats
    )
    return batcher, stats


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] for v in values], np.float32)}


async def test_concurrent_requests_share_one_model_call(
    executor: concurrent.futures.Executor,
) -> None:
    model = FakeModel()
    batcher, stats = make_batcher(model, executor, max_batch_size=32, batch_timeout_micros=200_000)
    results = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(10)))
    assert model.calls == [10]
    assert stats.model_calls == 1 and stats.batched_requests == 10
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [[2 * i]])


async def test_a_full_batch_does_not_wait_for_the_timeout(
    executor: concurrent.futures.Executor,
) -> None:
    model = FakeModel()
    batcher, _ = make_batcher(model, executor, max_batch_size=4, batch_timeout_micros=10_000_000)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(rows(i)) for i in range(8))), timeout=5
    )
    assert sorted(model.calls) == [4, 4]
    assert [r["y"][0, 0] for r in results] == [2 * i for i in range(8)]


async def test_multi_row_requests_are_sliced_back(executor: concurrent.futures.Executor) -> None:
    model = FakeModel()
    batcher, _ = make_batcher(model, executor, max_batch_size=8, batch_timeout_micros=100_000)
    first, second = await asyncio.gather(batcher.submit(rows(1, 2, 3)), batcher.submit(rows(4)))
    assert model.calls == [4]
    np.testing.assert_array_equal(first["y"], [[2], [4], [6]])
    np.testing.assert_array_equal(second["y"], [[8]])


async def test_batches_grow_while_the_model_is_busy(executor: concurrent.futures.Executor) -> None:
    gate = threading.Event()
    model = FakeModel(gate)
    batcher, _ = make_batcher(model, executor, max_batch_size=32, batch_timeout_micros=0)
    first = asyncio.ensure_future(batcher.submit(rows(0)))
    await asyncio.sleep(0.05)  # the first call is running and blocked
    rest = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, *rest)
    assert model.calls == [1, 5]


async def test_oversized_and_overflowing_requests(executor: concurrent.futures.Executor) -> None:
    gate = threading.Event()
    model = FakeModel(gate)
    batcher, _ = make_batcher(
        model, executor, max_batch_size=2, max_enqueued_batches=1, batch_timeout_micros=0,
        enable_large_batch_splitting=False,
    )  # fmt: skip
    with pytest.raises(ServingError) as caught:
        await batcher.submit(rows(1, 2, 3))
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message == "Task size 3 is larger than maximum input batch size 2"
    running = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(ServingError) as caught:
        await batcher.submit(rows(9))
    assert caught.value.code is Code.UNAVAILABLE
    assert "batch scheduling queue to which this task was submitted is full" in caught.value.message
    gate.set()
    await asyncio.gather(running, *queued)


async def test_a_request_larger_than_a_batch_is_split(
    executor: concurrent.futures.Executor,
) -> None:
    model = FakeModel()
    batcher, stats = make_batcher(model, executor, max_batch_size=4, batch_timeout_micros=0)
    values = [float(i) for i in range(10)]
    result = await asyncio.wait_for(batcher.submit(rows(*values)), timeout=5)
    np.testing.assert_array_equal(result["y"], [[2 * v] for v in values])
    assert sorted(model.calls) == [2, 4, 4]
    assert stats.largest_batch == 4


async def test_split_pieces_share_batches_with_other_requests(
    executor: concurrent.futures.Executor,
) -> None:
    model = FakeModel()
    batcher, _ = make_batcher(model, executor, max_batch_size=4, batch_timeout_micros=200_000)
    large, small = await asyncio.wait_for(
        asyncio.gather(batcher.submit(rows(1, 2, 3, 4, 5)), batcher.submit(rows(9))), timeout=5
    )
    np.testing.assert_array_equal(large["y"], [[2], [4], [6], [8], [10]])
    np.testing.assert_array_equal(small["y"], [[18]])
    # The last piece (one row) and the small request ride in one batch.
    assert sorted(model.calls) == [2, 4]


async def test_a_split_request_that_does_not_fit_the_queue_is_refused_whole(
    executor: concurrent.futures.Executor,
) -> None:
    model = FakeModel()
    batcher, _ = make_batcher(
        model, executor, max_batch_size=2, max_enqueued_batches=2, batch_timeout_micros=0
    )
    with pytest.raises(ServingError) as caught:
        await batcher.submit(rows(1, 2, 3, 4, 5))
    assert caught.value.code is Code.UNAVAILABLE
    assert model.calls == []


async def test_a_failing_model_call_fails_every_request_of_the_batch(
    executor: concurrent.futures.Executor,
) -> None:
    def broken(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise ServingError(Code.INVALID_ARGUMENT, "kernel said no")

    stats = BatchStats()
    batcher = Batcher(
        broken,
        BatchingParameters(batch_timeout_micros=100_000),
        executor,
        asyncio.Semaphore(1),
        stats,
    )
    outcomes = await asyncio.gather(
        *(batcher.submit(rows(i)) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, ServingError) and o.message == "kernel said no" for o in outcomes)
    assert stats.model_calls == 1


async def test_requests_of_other_shapes_wait_for_their_own_batch(
    executor: concurrent.futures.Executor,
) -> None:
    model = FakeModel()
    batcher, _ = make_batcher(model, executor, batch_timeout_micros=100_000)
    wide = {"x": np.ones((1, 2), np.float32)}
    results = await asyncio.gather(batcher.submit(rows(1)), batcher.submit(wide))
    assert sorted(model.calls) == [1, 1]
    assert results[1]["y"].shape == (1, 2)


def test_repository_batching_file_parses() -> None:
    parameters = read_batching_parameters(REPO / "model_server" / "batching.config")
    assert parameters == BatchingParameters(
        max_batch_size=32, batch_timeout_micros=1000, max_enqueued_batches=100, num_batch_threads=2
    )


def test_batching_file_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "batching.config"
    bad.write_text("max_batch_size { value: 0 }\n")
    with pytest.raises(ValueError, match="max_batch_size must be >= 1, got 0"):
        read_batching_parameters(bad)
    bad.write_text("max_batch_sise { value: 3 }\n")
    with pytest.raises(ValueError, match="max_batch_sise"):
        read_batching_parameters(bad)


async def test_a_request_running_past_its_deadline_gets_deadline_exceeded(
    executor: concurrent.futures.Executor,
) -> None:
    gate = threading.Event()
    model = FakeModel(gate)
    settings = BatchingParameters(max_batch_size=8, batch_timeout_micros=0)
    batcher = Batcher(
        model, settings, executor, asyncio.Semaphore(1), BatchStats(), timeout_seconds=0.1
    )
    running = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0.03)  # the model call has started and is blocked
    queued = asyncio.ensure_future(batcher.submit(rows(2)))
    outcomes = await asyncio.wait_for(
        asyncio.gather(running, queued, return_exceptions=True), timeout=5
    )
    for outcome in outcomes:
        assert isinstance(outcome, ServingError)
        assert (outcome.code, outcome.message) == (Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
    gate.set()
    # The expired request left the queue: it is never run, and later requests still are.
    result = await asyncio.wait_for(batcher.submit(rows(3)), timeout=5)
    np.testing.assert_array_equal(result["y"], [[6]])
    assert model.calls == [1, 1]


async def test_requests_within_their_deadline_are_answered(
    executor: concurrent.futures.Executor,
) -> None:
    model = FakeModel()
    settings = BatchingParameters(max_batch_size=4, batch_timeout_micros=0)
    batcher = Batcher(
        model, settings, executor, asyncio.Semaphore(1), BatchStats(), timeout_seconds=5
    )
    results = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(10)))
    assert [r["y"][0, 0] for r in results] == [2 * i for i in range(10)]
    assert sum(model.calls) == 10


def test_batching_file_can_turn_large_batch_splitting_off(tmp_path: Path) -> None:
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 8 }\n")
    assert read_batching_parameters(path).enable_large_batch_splitting is True
    path.write_text("max_batch_size { value: 8 }\nenable_large_batch_splitting { value: false }\n")
    assert read_batching_parameters(path).enable_large_batch_splitting is False
