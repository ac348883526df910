"""Pieces of the blob stores that need no database: keys, stream metering and re-cutting, the
local store's layout, the read retries, and which store the settings choose. The behaviour
suite over every store is `tests/integration/test_blob_stores.py`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backburner.files.blobs import (
    BlobChecksumMismatch,
    BlobTooLarge,
    InvalidBlobKey,
    LocalBlobStore,
    ReadRetry,
    file_blob_key,
    iter_bytes,
    validate_key,
)
from backburner.files.blobs.access import remove_stale_copies
from backburner.files.blobs.base import StreamMeter, rebuffer
from backburner.files.blobs.sweeper import sweep_cutoff
from backburner.settings_loader import SettingsError, load_settings

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def test_file_keys_are_valid_keys_under_the_files_prefix() -> None:
    assert validate_key(file_blob_key("file-abc_1")) == "files/file-abc_1"
    for bad in ["", "../x", "a//b", ".hidden", "a/.tmp/b", "x" * 1025, "sp ace"]:
        with pytest.raises(InvalidBlobKey):
            validate_key(bad)


async def test_rebuffer_cuts_any_stream_into_exact_pieces() -> None:
    async def stream(sizes: list[int]) -> AsyncIterator[bytes]:
        for number, size in enumerate(sizes):
            yield bytes([number % 256]) * size

    for sizes in ([], [0], [3], [10], [25], [1, 2, 3, 4, 5, 6], [100, 1, 7]):
        pieces = [bytes(p) async for p in rebuffer(stream(sizes), 10)]
        expected = b"".join(bytes([n % 256]) * s for n, s in enumerate(sizes))
        assert b"".join(pieces) == expected
        assert all(len(p) == 10 for p in pieces[:-1]) and all(pieces), (sizes, [len(p) for p in pieces])


async def test_the_meter_stops_at_the_limit_and_checks_the_hash() -> None:
    meter = StreamMeter("k", 10, None)
    meter.add(b"x" * 10)
    with pytest.raises(BlobTooLarge):
        meter.add(b"y")
    checked = StreamMeter("k", None, hashlib.sha256(b"right").hexdigest())
    checked.add(b"wrong")
    with pytest.raises(BlobChecksumMismatch) as caught:
        checked.finish()
    assert caught.value.actual == hashlib.sha256(b"wrong").hexdigest()
    fine = StreamMeter("k", None, hashlib.sha256(b"right").hexdigest())
    fine.add(b"right")
    assert fine.finish().size == 5


async def test_iter_bytes() -> None:
    assert [c async for c in iter_bytes(b"abcdefg", 3)] == [b"abc", b"def", b"g"]


def test_read_retries_double_their_wait() -> None:
    assert ReadRetry(attempts=5, first_delay_s=0.25).delays() == [0.25, 0.5, 1.0, 2.0]
    assert ReadRetry(attempts=1).delays() == []


def test_the_sweep_cutoff_is_an_hour_back() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert sweep_cutoff(now) == datetime(2030, 1, 1, 11, 0, tzinfo=UTC)


async def test_local_store_files_live_under_the_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    await store.write_bytes("org/file/blob.bin", b"data")
    assert (tmp_path / "root" / "org" / "file" / "blob.bin").read_bytes() == b"data"
    assert store.path_for("org/file/blob.bin") == (tmp_path / "root" / "org" / "file" / "blob.bin").resolve()


async def test_local_stale_temp_files_and_copies_are_removed_by_age(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    temp_dir = tmp_path / "root" / ".tmp"
    temp_dir.mkdir(parents=True)
    old, fresh = temp_dir / "old.part", temp_dir / "fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    now = fresh.stat().st_mtime
    os.utime(old, (now - 7200, now - 7200))
    cutoff = datetime.fromtimestamp(now - 3600, UTC)
    assert await store.remove_stale_uploads(cutoff) == 1
    assert not old.exists() and fresh.exists()
    assert await LocalBlobStore(tmp_path / "elsewhere").remove_stale_uploads(cutoff) == 0

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "backburner-blob-old").write_bytes(b"x")
    (scratch / "someone-elses").write_bytes(b"x")
    for path in scratch.iterdir():
        os.utime(path, (now - 7200, now - 7200))
    assert await remove_stale_copies(scratch, cutoff) == 1
    assert [p.name for p in scratch.iterdir()] == ["someone-elses"]


def test_the_store_follows_the_database_unless_chosen() -> None:
    assert load_settings(flags={}, environ={}).settings.effective_blob_store == "local"
    on_postgres = load_settings(flags={"database_url": PG_URL}, environ={}).settings
    assert on_postgres.effective_blob_store == "database"
    chosen = load_settings(flags={"database_url": PG_URL, "blob_store": "local"}, environ={}).settings
    assert chosen.effective_blob_store == "local"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"blob_store": "s3"}, "blob_store `s3` needs s3_bucket"),
        ({"blob_store": "ftp"}, "blob_store"),
        ({"s3_bucket": "bucket", "s3_access_key_id": "id"}, "set both or neither"),
        ({"s3_prefix": "a/../b"}, "s3_prefix"),
        ({"s3_bucket": "no spaces"}, "s3_bucket = 'no spaces'"),
        ({"s3_bucket": "ab"}, "3 to 255 letters"),
        ({"blob_sweep_interval_seconds": 0}, "blob_sweep_interval_seconds"),
    ],
)
def test_bad_blob_settings_are_refused_with_the_reason(values: dict[str, object], words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(flags=values, environ={})
    assert words in str(caught.value)


def test_the_s3_secret_is_masked() -> None:
    loaded = load_settings(
        flags={"blob_store": "s3", "s3_bucket": "bucket", "s3_access_key_id": "id"},
        environ={"BACKBURNER_S3_SECRET_ACCESS_KEY": "very-secret-value"},
    )
    assert "very-secret-value" not in str(loaded.describe())
    assert "very-secret-value" not in repr(loaded.settings)
