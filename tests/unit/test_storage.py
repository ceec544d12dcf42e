"""ImageStore.put_all is all-or-nothing (a stub client stands in for S3 in this one-function test)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from botocore.exceptions import ClientError

from imagegen.errors import StorageError
from imagegen.storage import ImageStore, StoredObject, image_key


class StubS3:
    def __init__(self, fail_keys: set[str]) -> None:
        self.fail_keys = fail_keys
        self.puts: dict[str, dict] = {}
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def put_object(self, **kwargs) -> None:
        if kwargs["Key"] in self.fail_keys:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "PutObject")
        with self.lock:
            self.puts[kwargs["Key"]] = kwargs

    def delete_objects(self, Bucket: str, Delete: dict) -> None:  # noqa: N803 - boto3's names
        self.deleted.extend(item["Key"] for item in Delete["Objects"])


def objects(n: int) -> list[StoredObject]:
    return [StoredObject(f"images/k/{index}.png", b"png", "image/png") for index in range(n)]


def test_failure_of_one_of_n_removes_the_others_and_raises() -> None:
    client = StubS3(fail_keys={"images/k/2.png"})
    with pytest.raises(StorageError, match="1 of 4"):
        ImageStore(client, "bucket").put_all(objects(4), {"model": "local"})  # type: ignore[arg-type]
    assert sorted(client.deleted) == sorted(set(client.puts))
    assert len(client.puts) == 3


def test_success_writes_encrypted_typed_objects_with_metadata() -> None:
    client = StubS3(fail_keys=set())
    ImageStore(client, "bucket").put_all(objects(2), {"model": "local"})  # type: ignore[arg-type]
    put = client.puts["images/k/1.png"]
    assert (put["Bucket"], put["ContentType"], put["ServerSideEncryption"], put["Metadata"]) == (
        "bucket",
        "image/png",
        "AES256",
        {"model": "local"},
    )
    assert client.deleted == []


def test_keys_are_dated_and_request_scoped() -> None:
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert image_key("abc/../x y", 3, "webp", when) == "images/2026/01/02/abc-..-x-y/3.webp"
