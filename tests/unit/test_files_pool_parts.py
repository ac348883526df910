"""What crosses back from a pool process, and how a file's writes are sliced there."""

from __future__ import annotations

import pickle

import pytest

from backburner.files.pool_ingest import WRITE_BATCH, IngestFailed, write_batches
from backburner.files.states import FileStatus, IllegalTransition
from backburner.files.store import FileNotFound, LeaseLost


@pytest.mark.parametrize(
    "error",
    [
        LeaseLost("file-1", "owner-1"),
        IllegalTransition("file-1", FileStatus.ERROR, FileStatus.EMBEDDING),
        FileNotFound("file-1"),
        IngestFailed("OperationalError: the database went away"),
    ],
)
def test_failures_of_a_pool_process_survive_the_trip_back(error: Exception) -> None:
    # concurrent.futures pickles a pool process's exception; one that cannot be rebuilt breaks
    # the whole pool.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


@pytest.mark.parametrize("count", [0, 1, WRITE_BATCH, WRITE_BATCH + 1, 3 * WRITE_BATCH + 7])
def test_writes_cover_the_chunks_in_order_in_bounded_batches(count: int) -> None:
    todo = list(range(100, 100 + count))
    batches = write_batches(todo)
    assert [index for batch in batches for index in batch] == todo
    assert all(0 < len(batch) <= WRITE_BATCH for batch in batches)
    assert len(batches) == -(-count // WRITE_BATCH)
