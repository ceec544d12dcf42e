"""S3: every image is written here first (all of a request or none), then answered as a presigned URL or base64."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from imagegen.errors import StorageError
from imagegen.observability import logger, tracer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    data: bytes
    content_type: str


def image_key(request_id: str, index: int, extension: str, when: dt.datetime) -> str:
    """``images/<yyyy>/<mm>/<dd>/<request-id>/<index>.<ext>``: dates and request ids spread the prefixes."""
    safe_id = _UNSAFE_KEY_CHARS.sub("-", request_id)[:128]
    return f"images/{when:%Y/%m/%d}/{safe_id}/{index}.{extension}"


class ImageStore:
    def __init__(self, client: S3Client, bucket: str, *, max_workers: int = 10) -> None:
        self._client = client
        self._bucket = bucket
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="s3-put")

    @tracer.capture_method(capture_response=False)
    def put_all(self, objects: Sequence[StoredObject], metadata: Mapping[str, str]) -> None:
        """Write every object concurrently; if any write fails, delete the ones that succeeded and raise."""
        futures = [self._pool.submit(self._put, obj, metadata) for obj in objects]
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

    def _put(self, obj: StoredObject, metadata: Mapping[str, str]) -> None:
        self._client.put_object(
            Bucket=self._bucket,
            Key=obj.key,
            Body=obj.data,
            ContentType=obj.content_type,
            ServerSideEncryption="AES256",
            Metadata=dict(metadata),
        )

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

    def presign(self, key: str, ttl_seconds: int) -> str:
        return self._client.generate_presigned_url("get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=ttl_seconds)
