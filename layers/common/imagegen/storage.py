"""S3: every image is written here first (all of a request or none), then answered as a presigned URL or base64."""

from __future__ import annotations

import datetime as dt
import functools
import io
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from botocore.exceptions import BotoCoreError, ClientError

from imagegen.deadline import Deadline
from imagegen.errors import InvalidRequestError, StorageError, StorageTimeoutError
from imagegen.observability import logger, tracer
from imagegen.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
# An SVG is a document that may carry script. Opened from a presigned URL, a browser would render it, and run that
# script, on the bucket's origin; stored as an attachment it is downloaded instead (an <img> still shows it, and
# images never run script).
_ATTACHMENT_TYPES = frozenset({"image/svg+xml"})


class _Disposition(TypedDict, total=False):
    ContentDisposition: str


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    data: bytes
    content_type: str


def image_key(request_id: str, index: int, extension: str, when: dt.datetime) -> str:
    """``images/<yyyy>/<mm>/<dd>/<request-id>/<index>.<ext>``: dates and request ids spread the prefixes."""
    safe_id = _UNSAFE_KEY_CHARS.sub("-", request_id)[:128]
    return f"images/{when:%Y/%m/%d}/{safe_id}/{index}.{extension}"


def input_key(request_id: str, name: str, extension: str, when: dt.datetime) -> str:
    """``inputs/<yyyy>/<mm>/<dd>/<request-id>/<name>.<ext>``: an edit's or a variation's input images (``image-0``,
    ``mask``, ...), under the same lifecycle as the images."""
    safe_id = _UNSAFE_KEY_CHARS.sub("-", request_id)[:128]
    return f"inputs/{when:%Y/%m/%d}/{safe_id}/{name}.{extension}"


# Of the margin kept after the provider's deadline (settings.response_margin_seconds), the share the writes of one
# request may use, and the share their clean-up may take after a give-up; the rest is left for answering.
WRITE_SHARE = 0.6
CLEANUP_SHARE = 0.2
DEFAULT_MARGIN_SECONDS: float = Settings.model_fields["response_margin_seconds"].default
# Writes of one request (at most 10) plus room for writes abandoned by earlier requests (they end within the S3
# client's timeouts, imagegen.clients.S3_TIMEOUTS) so that a stall does not leave the next request without threads.
MAX_WORKERS = 32


class UploadAbandoned(Exception):
    """Raised by an upload's body when its request has given up on it (never reaches a caller)."""


class _Upload(io.BytesIO):
    """The body of one put. Once the request gives up, reading it raises, so a write still being sent is cut off
    before S3 has the whole body (S3 stores an object only when all of it has arrived)."""

    def __init__(self, data: bytes, abandoned: threading.Event) -> None:
        super().__init__(data)
        self._abandoned = abandoned

    def read(self, size: int | None = -1) -> bytes:
        if self._abandoned.is_set():
            raise UploadAbandoned("the request gave up on this write")
        return super().read(size)


class ImageStore:
    def __init__(
        self, client: S3Client, bucket: str, *, max_workers: int = MAX_WORKERS, margin_seconds: float = DEFAULT_MARGIN_SECONDS
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._margin = margin_seconds
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="s3-put")

    @tracer.capture_method(capture_response=False)
    def put_all(self, objects: Sequence[StoredObject], metadata: Mapping[str, str], *, deadline: Deadline | None = None) -> None:
        """Write every object concurrently; if any write fails, delete the ones that succeeded and raise.

        With a ``deadline`` (the provider's: the request's end less the margin), the writes may take until the
        deadline plus their share of the margin. Past that, nothing of the request is kept: writes not started are
        cancelled, writes being sent are cut off, the written ones are deleted, a write that completes later is
        deleted when it does, and StorageTimeoutError (504) is raised."""
        abandoned = threading.Event()
        futures = [self._pool.submit(self._put, obj, metadata, abandoned) for obj in objects]
        timeout = None if deadline is None else max(0.0, deadline.remaining() + WRITE_SHARE * self._margin)
        done, pending = wait(futures, timeout=timeout)
        if pending:
            self._abandon(objects, futures, abandoned)
            raise StorageTimeoutError(
                f"Storing the images did not finish before the request deadline ({len(pending)} of {len(objects)} "
                "writes unanswered); nothing was kept. Try again."
            )
        outcomes = [future.exception() for future in futures]
        failures = [failure for failure in outcomes if failure is not None]
        if failures:
            written = [obj.key for obj, failure in zip(objects, outcomes, strict=True) if failure is None]
            self.delete(written)
            bugs = [failure for failure in failures if not isinstance(failure, BotoCoreError | ClientError)]
            if bugs:
                raise bugs[0]
            raise StorageError(
                f"Storing the images failed ({len(failures)} of {len(objects)} writes); nothing was kept. Try again."
            ) from failures[0]

    def _put(self, obj: StoredObject, metadata: Mapping[str, str], abandoned: threading.Event) -> None:
        disposition: _Disposition = {"ContentDisposition": "attachment"} if obj.content_type in _ATTACHMENT_TYPES else {}
        self._client.put_object(
            Bucket=self._bucket,
            Key=obj.key,
            Body=_Upload(obj.data, abandoned),
            ContentType=obj.content_type,
            ServerSideEncryption="AES256",
            Metadata=dict(metadata),
            **disposition,
        )

    def _abandon(self, objects: Sequence[StoredObject], futures: Sequence[Future[None]], abandoned: threading.Event) -> None:
        """Give up on a request's writes: none of them may stay (see put_all). A write still unanswered may already
        be stored (S3 answers after storing), so it is deleted now with the written ones, and again when it ends
        (it may land in between). What can remain: a write S3 stores after both deletes, e.g. an attempt the SDK
        timed out on but S3 completed later; no answer, job or idempotency record names it, and the bucket's
        lifecycle rule expires it."""
        abandoned.set()
        keys: list[str] = []
        for obj, future in zip(objects, futures, strict=True):
            if future.cancel():
                continue
            if not future.done():
                future.add_done_callback(functools.partial(self._delete_late_write, obj.key))
                keys.append(obj.key)
            elif future.exception() is None:
                keys.append(obj.key)
        if keys:
            cleanup = self._pool.submit(self.delete, keys)
            if not wait([cleanup], timeout=CLEANUP_SHARE * self._margin).done:
                logger.warning("clean-up of abandoned images continues after the answer", extra={"keys": keys})
        logger.warning("gave up storing images at the deadline", extra={"keys": [obj.key for obj in objects]})

    def _delete_late_write(self, key: str, future: Future[None]) -> None:
        """A write that ended after its request gave up on it: whatever its outcome, S3 may hold it; remove it."""
        if not future.cancelled():
            logger.warning("deleting an image whose write ended after its request gave up", extra={"key": key})
            self.delete([key])

    def delete(self, keys: Sequence[str]) -> None:
        """Best effort: a failed clean-up is logged (the bucket's lifecycle rule expires it later)."""
        if not keys:
            return
        try:
            self._client.delete_objects(Bucket=self._bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})
        except (BotoCoreError, ClientError):
            logger.exception("clean-up of partially written images failed", extra={"keys": list(keys)})

    def put_json(self, key: str, document: str) -> None:
        """A small JSON document (a results manifest); S3 failures become a retryable StorageError."""
        try:
            self._client.put_object(
                Bucket=self._bucket, Key=key, Body=document.encode(), ContentType="application/json", ServerSideEncryption="AES256"
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"Writing {key} failed; try again.") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"Reading {key} failed; try again.") from exc

    def read_input(self, key: str, *, max_bytes: int, param: str) -> bytes:
        """An input image stored earlier (a job's, a queue message's): a missing object or one above ``max_bytes`` is
        the request's fault (a 400 naming ``param``), never read whole when too large."""
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            # Without s3:ListBucket (the roles have none), S3 answers a missing key with AccessDenied, not NoSuchKey:
            # either way the request named an object this function cannot read, which no retry cures.
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "AccessDenied", "403"):
                raise InvalidRequestError(
                    f"Invalid '{param}': no object '{key}' that this deployment can read in its bucket.", param=param
                ) from exc
            raise StorageError(f"Reading {key} failed; try again.") from exc
        except BotoCoreError as exc:
            raise StorageError(f"Reading {key} failed; try again.") from exc
        body = response["Body"]
        try:
            if response.get("ContentLength", 0) > max_bytes:
                raise InvalidRequestError(
                    f"Invalid '{param}': the object '{key}' is {response['ContentLength']} bytes, the maximum is {max_bytes}.",
                    param=param,
                    code="image_too_large",
                )
            return body.read()
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"Reading {key} failed; try again.") from exc
        finally:
            body.close()

    def presign(self, key: str, ttl_seconds: int) -> str:
        return self._client.generate_presigned_url("get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=ttl_seconds)
