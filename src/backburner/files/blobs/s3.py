"""Blobs in any S3-compatible object store (AWS S3, MinIO, Ceph, Cloudflare R2, Google Cloud
Storage's S3 interface), through aiobotocore.

aiobotocore is botocore (the code under the AWS SDK for Python) driven by asyncio: it signs and
retries like the SDK, speaks to every S3-compatible server, and exposes the whole S3 API, which
this store needs beyond puts and gets: listing and aborting unfinished multipart uploads (the
orphan sweeper), and bucket checks whose error codes tell a missing bucket from refused
credentials (readiness).

A blob smaller than one part is sent in a single PUT once it has been read whole (at most one
part in memory), with its SHA-256 as object metadata. A larger one is sent as a multipart
upload, one part at a time, so memory holds one part; it carries its SHA-256 only when the
writer knew it in advance (a migration does). Both appear only once complete; a failed,
cancelled or too large write aborts its multipart upload, and one left by a crash is aborted by
the orphan sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from contextlib import AsyncExitStack
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from backburner.files.blobs.base import (
    READ_CHUNK_BYTES,
    BlobEntry,
    BlobInfo,
    BlobNotFound,
    BlobStat,
    BlobStore,
    BlobStoreUnavailable,
    cut_into_pieces,
    is_valid_key,
    validate_key,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# The smallest part S3 accepts (but for the last one): memory holds one part per write.
PART_BYTES = 5 * 1024 * 1024
SHA256_METADATA = "sha256"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 3
_MISSING_OBJECT = frozenset({"NoSuchKey", "404", "NotFound"})
_MISSING_BUCKET = frozenset({"NoSuchBucket"})
_REFUSED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "InvalidToken", "ExpiredToken"}
)


class S3BlobStore(BlobStore):
    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_bytes = part_bytes
        self._credentials = (access_key_id, secret_access_key)
        self._client: S3Client | None = None
        self._stack = AsyncExitStack()
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region or 'default region'})"

    def describe(self, key: str) -> str:
        return f"key {key!r} in the s3 blob store (bucket {self.bucket!r}, object {self._object_key(key)!r})"

    # --- writing ----------------------------------------------------------------------------

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        max_bytes: int | None = None,
        *,
        expected_sha256: str | None = None,
    ) -> BlobInfo:
        pieces = await cut_into_pieces(key, chunks, max_bytes, expected_sha256, self.part_bytes)
        client = await self._s3()
        if pieces.whole:
            info = pieces.meter.finish()
            with self._errors():
                await client.put_object(
                    Bucket=self.bucket,
                    Key=self._object_key(key),
                    Body=PartReader(pieces.first),
                    Metadata={SHA256_METADATA: info.sha256},
                )
            return info
        metadata = {SHA256_METADATA: expected_sha256} if expected_sha256 else {}
        with self._errors():
            started = await client.create_multipart_upload(
                Bucket=self.bucket, Key=self._object_key(key), Metadata=metadata
            )
        upload_id = started["UploadId"]
        try:
            with self._errors():
                parts = [await self._upload_part(client, key, upload_id, 1, pieces.first)]
                pieces.first = bytearray()  # not kept while the rest streams in
                async for piece in pieces.rest:
                    parts.append(await self._upload_part(client, key, upload_id, len(parts) + 1, piece))
                    del piece  # not kept while the next part fills
                info = pieces.meter.finish()  # a wrong hash aborts before the object exists
                await client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self._object_key(key),
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
        except BaseException:
            await asyncio.shield(self._abort(key, upload_id))
            raise
        return info

    async def _upload_part(
        self, client: S3Client, key: str, upload_id: str, number: int, body: bytearray
    ) -> dict[str, Any]:
        answer = await client.upload_part(
            Bucket=self.bucket,
            Key=self._object_key(key),
            UploadId=upload_id,
            PartNumber=number,
            Body=PartReader(body),
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):  # the sweeper aborts it later
            client = await self._s3()
            await client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._object_key(key), UploadId=upload_id
            )

    # --- reading ----------------------------------------------------------------------------

    async def open(self, key: str, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncGenerator[bytes, None]:
        validate_key(key)
        client = await self._s3()
        with self._errors(key):
            answer = await client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            async with answer["Body"] as body:
                while chunk := await body.read(chunk_bytes):
                    yield chunk

    async def stat(self, key: str) -> BlobStat | None:
        validate_key(key)
        client = await self._s3()
        try:
            with self._errors(key):
                found = await client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except BlobNotFound:
            return None
        return BlobStat(
            int(found["ContentLength"]), found.get("Metadata", {}).get(SHA256_METADATA), found["LastModified"]
        )

    # --- removing ---------------------------------------------------------------------------

    async def delete(self, key: str) -> bool:
        if await self.stat(key) is None:
            return False
        client = await self._s3()
        with self._errors(key):
            await client.delete_object(Bucket=self.bucket, Key=self._object_key(key))
        return True

    async def list_blobs(self, prefix: str, older_than: datetime) -> AsyncIterator[list[BlobEntry]]:
        client = await self._s3()
        skip = len(self._object_key(""))
        with self._errors():
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._object_key(prefix)
            )
            async for page in pages:
                found = [
                    BlobEntry(item["Key"][skip:], item["LastModified"])
                    for item in page.get("Contents", [])
                    if item["LastModified"] < older_than and is_valid_key(item["Key"][skip:])
                ]
                if found:
                    yield found

    async def remove_stale_uploads(self, older_than: datetime) -> int:
        client = await self._s3()
        removed = 0
        with self._errors():
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._object_key("")
            )
            async for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < older_than:
                        await client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        return removed

    # --- health and lifecycle ---------------------------------------------------------------

    async def check(self) -> str | None:
        try:
            client = await self._s3()
            await client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            return self._explain(exc)
        return None

    async def aclose(self) -> None:
        async with self._lock:
            await self._stack.aclose()
            self._client = None

    async def _s3(self) -> S3Client:
        """The client, made on first use (so that building the store does no I/O)."""
        async with self._lock:
            if self._client is None:
                # Importing the SDK takes a third of a second or more: not on the event loop.
                session = await asyncio.to_thread(_sdk_session)
                made: S3Client = await self._stack.enter_async_context(self._new_client(session))
                self._client = made
                return made
            return self._client

    def _new_client(self, session: Any) -> Any:
        from aiobotocore.config import AioConfig

        access_key_id, secret_access_key = self._credentials
        config = AioConfig(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            # Servers that mimic S3 often lack the newer default checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Path-style addressing is what MinIO, Ceph and most local servers expect.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
        )
        return session.create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """S3's errors as blob-store errors: a missing object of `key` is `BlobNotFound`; a missing
        bucket, refused credentials or an unreachable endpoint is `BlobStoreUnavailable`."""
        try:
            yield
        except ClientError as exc:
            if key is not None and _code(exc) in _MISSING_OBJECT:
                raise BlobNotFound(key, self.name) from None
            raise BlobStoreUnavailable(self._explain(exc)) from exc
        except BotoCoreError as exc:
            raise BlobStoreUnavailable(self._explain(exc)) from exc

    def _explain(self, exc: Exception) -> str:
        if isinstance(exc, NoCredentialsError):
            return (
                "no S3 credentials were found: set s3_access_key_id and s3_secret_access_key "
                "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        if not isinstance(exc, ClientError):
            return f"cannot reach the S3 endpoint {self.where}: {exc}"
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MISSING_BUCKET or (status == 404 and code in _MISSING_OBJECT):
            return f"the S3 bucket {self.bucket!r} does not exist at {self.where}"
        if code in _REFUSED or status == 403:
            return (
                f"{self.where} refused access to the S3 bucket {self.bucket!r} ({code}): check "
                "s3_access_key_id, s3_secret_access_key and the bucket's permissions"
            )
        return f"{self.where} answered {status} {code} for the S3 bucket {self.bucket!r}: {exc}"


def _sdk_session() -> Any:
    from aiobotocore.config import AioConfig  # noqa: F401 (imported here, off the loop, for the caller)
    from aiobotocore.session import get_session

    return get_session()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class PartReader(io.RawIOBase):
    """A part's buffer as a seekable file, read in place: the HTTP client streams it in small
    reads (a large bytes body would be sent in one blocking write), and nothing is copied whole."""

    def __init__(self, data: bytearray) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), len(self._view) - self._position)
        buffer[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position
