"""ImageStore.put_all is all-or-nothing, also when S3 stalls past the request's deadline (a stub client stands in
for S3 in this one-function test)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from botocore.exceptions import ClientError

from imagegen.deadline import Deadline
from imagegen.errors import InvalidRequestError, StorageError, StorageTimeoutError
from imagegen.storage import CLEANUP_SHARE, WRITE_SHARE, ImageStore, StoredObject, image_key


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


# --- the request's deadline bounds the writes -------------------------------------------------------------------


class StallingS3(StubS3):
    """S3 that never answers the puts of ``stall_keys`` until ``release`` is set (then they complete: late writes).
    Each put reads its body the way the HTTP client sends it, in blocks."""

    def __init__(self, stall_keys: set[str], *, stall_mid_body: bool = False) -> None:
        super().__init__(fail_keys=set())
        self.stall_keys = stall_keys
        self.stall_mid_body = stall_mid_body
        self.release = threading.Event()
        self.stalled = threading.Event()
        self.finished = threading.Event()

    def put_object(self, **kwargs) -> None:
        body = kwargs["Body"]
        if kwargs["Key"] not in self.stall_keys:
            kwargs["Body"] = body.read()
            return super().put_object(**kwargs)
        try:
            sent = body.read(1) if self.stall_mid_body else body.read()
            self.stalled.set()
            self.release.wait(10)
            if self.stall_mid_body:
                sent += body.read()  # the rest of the body goes out only now
            with self.lock:
                self.puts[kwargs["Key"]] = {**kwargs, "Body": sent}
        finally:
            self.finished.set()


def test_a_stalled_write_gives_up_at_the_deadline_and_keeps_nothing() -> None:
    client = StallingS3(stall_keys={"images/k/1.png"})
    store = ImageStore(client, "bucket", margin_seconds=1.0)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        with pytest.raises(StorageTimeoutError) as raised:
            store.put_all(objects(3), {"model": "local"}, deadline=Deadline.after(0.1))
        # the provider's deadline, plus the writes' share of the margin, plus at most the clean-up's share
        assert 0.1 + WRITE_SHARE <= time.monotonic() - started < 0.1 + WRITE_SHARE + CLEANUP_SHARE + 0.1
    finally:
        client.release.set()
    assert raised.value.status_code == 504
    # deleted before the answer: the written ones, and the unanswered one (S3 may have stored it already)
    assert sorted(client.deleted) == ["images/k/0.png", "images/k/1.png", "images/k/2.png"]


def test_a_write_that_completes_after_the_give_up_is_deleted_when_it_does() -> None:
    client = StallingS3(stall_keys={"images/k/1.png"})
    store = ImageStore(client, "bucket", margin_seconds=0.0)  # type: ignore[arg-type]
    with pytest.raises(StorageTimeoutError):
        store.put_all(objects(2), {"model": "local"}, deadline=Deadline.after(0.2))
    client.release.set()  # S3 stores the stalled write after all, after the first clean-up: it exists now
    assert client.finished.wait(5)
    deadline = time.monotonic() + 5
    while client.deleted.count("images/k/1.png") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(client.puts) == ["images/k/0.png", "images/k/1.png"]
    assert client.deleted.count("images/k/1.png") == 2  # once at the give-up, once after it landed


def test_a_write_still_sending_its_body_is_cut_off_so_s3_never_stores_it() -> None:
    client = StallingS3(stall_keys={"images/k/0.png"}, stall_mid_body=True)
    store = ImageStore(client, "bucket", margin_seconds=0.0)  # type: ignore[arg-type]
    with pytest.raises(StorageTimeoutError):
        store.put_all([StoredObject("images/k/0.png", b"png-bytes", "image/png")], {}, deadline=Deadline.after(0.2))
    client.release.set()
    assert client.finished.wait(5)
    assert client.puts == {}  # the rest of the body was never read: S3 got a truncated request and stored nothing


def test_writes_not_started_by_the_deadline_never_start() -> None:
    client = StallingS3(stall_keys={"images/k/0.png"})
    store = ImageStore(client, "bucket", max_workers=1, margin_seconds=0.0)  # type: ignore[arg-type]
    with pytest.raises(StorageTimeoutError):
        store.put_all(objects(3), {}, deadline=Deadline.after(0.2))
    client.release.set()
    assert client.finished.wait(5)
    time.sleep(0.1)
    assert set(client.puts) <= {"images/k/0.png"}  # 1 and 2 were queued behind 0: cancelled, never sent


def test_the_writes_may_use_their_share_of_the_margin_past_the_providers_deadline() -> None:
    client = StallingS3(stall_keys={"images/k/0.png"})
    store = ImageStore(client, "bucket", margin_seconds=1.0)  # type: ignore[arg-type]
    threading.Timer(0.3, client.release.set).start()  # S3 answers 0.3 s after the provider's deadline
    store.put_all(objects(2), {}, deadline=Deadline.after(0.0))
    assert sorted(client.puts) == ["images/k/0.png", "images/k/1.png"] and client.deleted == []


class ReadStub:
    """get_object answering one S3 error code (or a body of ``size`` bytes)."""

    def __init__(self, code: str | None = None, size: int = 3) -> None:
        self.code, self.size = code, size
        self.closed = False

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803 - boto3's names
        if self.code is not None:
            raise ClientError({"Error": {"Code": self.code, "Message": "injected"}}, "GetObject")
        stub = self

        class Body:
            def read(self) -> bytes:
                return b"x" * stub.size

            def close(self) -> None:
                stub.closed = True

        return {"Body": Body(), "ContentLength": self.size}


@pytest.mark.parametrize("code", ["NoSuchKey", "AccessDenied"])
def test_an_input_key_that_cannot_be_read_is_the_requests_fault(code: str) -> None:
    # Without s3:ListBucket, S3 answers a missing key AccessDenied: a 400 naming the field, never a retry
    with pytest.raises(InvalidRequestError) as caught:
        ImageStore(ReadStub(code), "b").read_input("inputs/x.png", max_bytes=10, param="mask.key")
    assert caught.value.param == "mask.key"


def test_an_input_object_above_the_limit_is_refused_unread_and_a_server_error_is_retryable() -> None:
    stub = ReadStub(size=11)
    with pytest.raises(InvalidRequestError) as caught:
        ImageStore(stub, "b").read_input("inputs/x.png", max_bytes=10, param="images[0].key")
    assert caught.value.code == "image_too_large" and stub.closed
    assert ImageStore(ReadStub(size=10), "b").read_input("inputs/x.png", max_bytes=10, param="p") == b"x" * 10
    with pytest.raises(StorageError):
        ImageStore(ReadStub("InternalError"), "b").read_input("inputs/x.png", max_bytes=10, param="p")
