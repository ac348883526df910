"""Blob stores: where uploaded files' contents live (`blob_store`: local, database or s3).

The S3 store is imported only when chosen (`build_blob_store`), so that its SDK costs nothing
to processes that do not use it.
"""

from backburner.files.blobs.access import BlobUnreadable, ReadRetry, local_path
from backburner.files.blobs.base import (
    FILE_KEY_PREFIX,
    READ_CHUNK_BYTES,
    BlobChecksumMismatch,
    BlobEntry,
    BlobError,
    BlobInfo,
    BlobNotFound,
    BlobStat,
    BlobStore,
    BlobStoreUnavailable,
    BlobTooLarge,
    InvalidBlobKey,
    file_blob_key,
    iter_bytes,
    validate_key,
)
from backburner.files.blobs.database import DatabaseBlobStore
from backburner.files.blobs.factory import build_blob_store
from backburner.files.blobs.local import LocalBlobStore
from backburner.files.blobs.memory import InMemoryBlobStore

__all__ = [
    "FILE_KEY_PREFIX",
    "READ_CHUNK_BYTES",
    "BlobChecksumMismatch",
    "BlobEntry",
    "BlobError",
    "BlobInfo",
    "BlobNotFound",
    "BlobStat",
    "BlobStore",
    "BlobStoreUnavailable",
    "BlobTooLarge",
    "BlobUnreadable",
    "DatabaseBlobStore",
    "InMemoryBlobStore",
    "InvalidBlobKey",
    "LocalBlobStore",
    "ReadRetry",
    "build_blob_store",
    "file_blob_key",
    "iter_bytes",
    "local_path",
    "validate_key",
]
