"""Edit and variation jobs off the API path, against real loopback servers: S3 (SeaweedFS), SQS and DynamoDB (moto
server). The API, worker and S3-trigger handlers run in-process; the local provider's edit inverts the input where the
mask is transparent and records the input's SHA-256, so each test sees which image arrived and what was done to it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid

import httpx
import pytest
from PIL import Image as PILImage

from functions.worker import app as worker
from tests.conftest import clear_caches, job_event, load_event
from tests.integration.test_async_jobs import call_api, manifest, s3_watcher, sqs_record

pytestmark = pytest.mark.integration

RED, CYAN, BLUE, YELLOW = (255, 0, 0), (0, 255, 255), (0, 0, 255), (255, 255, 0)


def png(width: int, height: int, colour: tuple[int, ...], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    PILImage.new(mode, (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def left_half_mask(width: int, height: int) -> bytes:
    """Transparent (the area to edit) on the left half, opaque on the right."""
    image = PILImage.new("RGBA", (width, height), (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def pixels(data: bytes) -> tuple[tuple[int, int], tuple[int, ...], tuple[int, ...], str | None]:
    """(size, the RGB at the left edge, the RGB at the right edge, the input hash the local provider wrote)."""
    image = PILImage.open(io.BytesIO(data))
    image.load()
    rgb = image.convert("RGB")
    width, height = image.size
    return image.size, rgb.getpixel((0, height // 2)), rgb.getpixel((width - 1, height // 2)), image.info.get("imagegen:input-sha256")


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode() for name, value in fields.items()]
    parts += [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for name, data in files.items()
    ]
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def async_edit_event(fields: dict[str, str], files: dict[str, bytes], **headers: str) -> dict:
    """POST /v1/images/edits as API Gateway sends a multipart body (base64), with ``Prefer: respond-async``."""
    event = load_event("api_edit_multipart.json")
    content_type, body = multipart(fields, files)
    event["body"] = base64.b64encode(body).decode()
    for name, value in {"Content-Type": content_type, "Prefer": "respond-async", **headers}.items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    return event


def queued_messages(moto_server, job_resources) -> int:
    attributes = moto_server.client("sqs").get_queue_attributes(QueueUrl=job_resources.queue_url, AttributeNames=["All"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def inputs_of(s3, bucket: str, job_id: str) -> dict[str, str]:
    """The inputs stored for a job: file name -> key (inputs/<yyyy>/<mm>/<dd>/<job id>/<name>)."""
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="inputs/").get("Contents", [])
    return {obj["Key"].rsplit("/", 1)[-1]: obj["Key"] for obj in listing if f"/{job_id}/" in obj["Key"]}


def stored_image(s3, bucket: str, job: dict) -> bytes:
    (image,) = job["images"]
    return s3.get_object(Bucket=bucket, Key=image["key"])["Body"].read()


def test_an_async_multipart_edit_is_accepted_then_the_worker_edits_the_stored_input(
    job_resources, worker_poller, moto_server, local_s3, s3, lambda_context
) -> None:
    # Given a red image and a mask transparent on its left half, sent with Prefer: respond-async
    image, mask = png(64, 64, RED), left_half_mask(64, 64)
    event = async_edit_event({"prompt": "paint the left half", "model": "local", "response_format": "url"}, {"image": image, "mask": mask})
    status, accepted, response = call_api(event, lambda_context)
    # Then it is accepted for later, and queued with its inputs already stored under inputs/
    assert status == 202, accepted
    assert accepted["status"] == "queued" and response["multiValueHeaders"]["Location"] == [f"/prod/v1/images/jobs/{accepted['id']}"]
    assert response["multiValueHeaders"]["Preference-Applied"] == ["respond-async"]
    stored = inputs_of(s3, local_s3.bucket, accepted["id"])
    assert set(stored) == {"image-0.png", "mask.png"}
    assert s3.get_object(Bucket=local_s3.bucket, Key=stored["image-0.png"])["Body"].read() == image
    assert queued_messages(moto_server, job_resources) == 1
    # When the worker runs the queue
    worker_poller.drain()
    # Then the job succeeded with the input transformed: the left half inverted (red -> cyan), the right kept
    status, done, _ = call_api(job_event(accepted["id"]), lambda_context)
    assert (status, done["status"]) == (200, "succeeded"), done
    (item,) = done["data"]
    fetched = httpx.get(item["url"], timeout=10)
    assert fetched.status_code == 200
    assert pixels(fetched.content) == ((64, 64), CYAN, RED, hashlib.sha256(image).hexdigest())


def test_an_async_edit_with_a_bad_input_is_a_400_at_once_and_queues_nothing(job_resources, moto_server, lambda_context) -> None:
    # A mask that is not the image's size is refused before anything is stored or queued
    event = async_edit_event({"prompt": "x", "model": "local"}, {"image": png(64, 64, RED), "mask": left_half_mask(32, 32)})
    status, body, _ = call_api(event, lambda_context)
    assert (status, body["error"]["param"]) == (400, "mask"), body
    assert queued_messages(moto_server, job_resources) == 0


def test_an_async_edit_the_queue_refuses_keeps_none_of_its_inputs(
    job_resources, moto_server, local_s3, s3, lambda_context, monkeypatch
) -> None:
    # Given a queue that refuses the message (its URL names no queue)
    monkeypatch.setenv("JOBS_QUEUE_URL", job_resources.queue_url + "-does-not-exist")
    clear_caches()
    event = async_edit_event({"prompt": "paint", "model": "local"}, {"image": png(64, 64, RED), "mask": left_half_mask(64, 64)})
    # When the edit is submitted: a 502 (nothing queued), its job recorded as failed, and its inputs deleted again
    status, body, _ = call_api(event, lambda_context)
    assert (status, body["error"]["code"]) == (502, "queue_error"), body
    (item,) = moto_server.client("dynamodb").scan(TableName=job_resources.table)["Items"]
    assert item["status"]["S"] == "failed"
    assert inputs_of(s3, local_s3.bucket, item["id"]["S"]) == {}


def test_an_async_edit_refuses_an_idempotency_key_by_name(job_resources, moto_server, lambda_context) -> None:
    event = async_edit_event({"prompt": "x", "model": "local"}, {"image": png(64, 64, RED)}, **{"Idempotency-Key": f"k-{uuid.uuid4()}"})
    status, body, _ = call_api(event, lambda_context)
    assert (status, body["error"]["param"]) == (400, "Idempotency-Key"), body
    assert "Idempotency-Key" in body["error"]["message"]
    assert queued_messages(moto_server, job_resources) == 0


def test_an_sqs_edit_message_reads_its_images_by_key_under_inputs(job_resources, local_s3, s3, lambda_context) -> None:
    # Given an image a trusted producer stored under inputs/ itself
    image = png(48, 32, BLUE)
    key = f"inputs/producer-{uuid.uuid4().hex[:8]}/photo.png"
    s3.put_object(Bucket=local_s3.bucket, Key=key, Body=image)
    job_id = f"edit-{uuid.uuid4().hex[:8]}"
    body = {"operation": "edit", "id": job_id, "prompt": "invert it", "model": "local", "images": [{"key": key}]}
    # When the worker gets the message
    assert worker.lambda_handler({"Records": [sqs_record(body)]}, lambda_context) == {"batchItemFailures": []}
    # Then the whole image is inverted (no mask), at the input's size, and the input is not stored a second time
    done = manifest(s3, local_s3.bucket, f"results/{job_id}.json")
    assert done["status"] == "succeeded", done
    assert pixels(stored_image(s3, local_s3.bucket, done)) == ((48, 32), YELLOW, YELLOW, hashlib.sha256(image).hexdigest())
    assert inputs_of(s3, local_s3.bucket, job_id) == {}


def test_an_sqs_variation_message_varies_its_image_by_key(job_resources, local_s3, s3, lambda_context) -> None:
    image = png(40, 40, RED)
    key = f"inputs/producer-{uuid.uuid4().hex[:8]}/photo.png"
    s3.put_object(Bucket=local_s3.bucket, Key=key, Body=image)
    job_id = f"vary-{uuid.uuid4().hex[:8]}"
    body = {"operation": "variation", "id": job_id, "model": "local", "image": {"key": key}}
    assert worker.lambda_handler({"Records": [sqs_record(body)]}, lambda_context) == {"batchItemFailures": []}
    done = manifest(s3, local_s3.bucket, f"results/{job_id}.json")
    assert done["status"] == "succeeded", done
    assert pixels(stored_image(s3, local_s3.bucket, done)) == ((40, 40), CYAN, CYAN, hashlib.sha256(image).hexdigest())


def test_an_s3_request_object_edits_an_image_url_data_url_and_stores_that_input(
    job_resources, worker_poller, local_s3, s3, lambda_context, monkeypatch
) -> None:
    # Given a request object whose image comes as a data: URL, with a mask, and a trigger as deployed (no table)
    image, mask = png(64, 64, RED), left_half_mask(64, 64)

    def data_url(data: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(data).decode()

    name = f"edits-{uuid.uuid4().hex[:6]}/red.json"
    request = {
        "operation": "edit",
        "prompt": "paint the left half",
        "model": "local",
        "images": [{"image_url": data_url(image)}],
        "mask": {"image_url": data_url(mask)},
    }
    watcher = s3_watcher(s3, local_s3.bucket, lambda_context)
    s3.put_object(Bucket=local_s3.bucket, Key=f"requests/{name}", Body=json.dumps(request))
    with monkeypatch.context() as trigger_env:
        trigger_env.delenv("JOBS_TABLE")
        assert watcher.scan_once() == 1
    clear_caches()
    # When the worker runs the queue
    worker_poller.drain()
    # Then results/<same key> has the edited image, and the worker stored the fetched inputs under inputs/
    done = manifest(s3, local_s3.bucket, f"results/{name}")
    assert done["status"] == "succeeded", done
    assert pixels(stored_image(s3, local_s3.bucket, done)) == ((64, 64), CYAN, RED, hashlib.sha256(image).hexdigest())
    inputs = inputs_of(s3, local_s3.bucket, done["id"])
    assert set(inputs) == {"image-0.png", "mask.png"}
    assert s3.get_object(Bucket=local_s3.bucket, Key=inputs["image-0.png"])["Body"].read() == image


def test_a_missing_input_key_fails_the_job_naming_the_param_and_is_not_retried(job_resources, local_s3, s3, lambda_context) -> None:
    image_key = f"inputs/producer-{uuid.uuid4().hex[:8]}/photo.png"
    s3.put_object(Bucket=local_s3.bucket, Key=image_key, Body=png(64, 64, RED))
    job_id = f"missing-{uuid.uuid4().hex[:8]}"
    body = {
        "operation": "edit",
        "id": job_id,
        "prompt": "x",
        "model": "local",
        "images": [{"key": image_key}],
        "mask": {"key": f"inputs/nowhere-{uuid.uuid4().hex[:8]}/mask.png"},
    }
    # The message is acknowledged (not handed back for a retry), and the job failed as the request's fault
    assert worker.lambda_handler({"Records": [sqs_record(body)]}, lambda_context) == {"batchItemFailures": []}
    failed = manifest(s3, local_s3.bucket, f"results/{job_id}.json")
    assert (failed["status"], failed["error"]["param"], failed["error"]["type"], failed["retryable"]) == (
        "failed",
        "mask.key",
        "invalid_request_error",
        False,
    )
    assert failed["attempts"] == 1
    # And a redelivery of the same message does not run it again
    assert worker.lambda_handler({"Records": [sqs_record(body, receive_count=2)]}, lambda_context) == {"batchItemFailures": []}
    assert manifest(s3, local_s3.bucket, f"results/{job_id}.json")["attempts"] == 1


def test_an_unknown_operation_is_a_failed_job_naming_it(job_resources, local_s3, s3, lambda_context) -> None:
    job_id = f"op-{uuid.uuid4().hex[:8]}"
    body = {"operation": "upscale", "id": job_id, "prompt": "x"}
    assert worker.lambda_handler({"Records": [sqs_record(body)]}, lambda_context) == {"batchItemFailures": []}
    failed = manifest(s3, local_s3.bucket, f"results/{job_id}.json")
    assert (failed["status"], failed["error"]["param"]) == ("failed", "operation")
    assert "'edit'" in failed["error"]["message"]


@pytest.fixture
def faulty_s3(job_resources, s3_proxy, monkeypatch):
    s3_proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint_url)
    clear_caches()
    yield s3_proxy
    s3_proxy.reset()


def test_a_failed_input_write_keeps_nothing_and_the_queue_retries_the_job(faulty_s3, local_s3, s3, lambda_context) -> None:
    # Given an edit whose image and mask come as data: URLs, and S3 refusing the worker's first write of the mask
    image, mask = png(64, 64, RED), left_half_mask(64, 64)
    job_id = f"retry-{uuid.uuid4().hex[:8]}"
    body = {
        "operation": "edit",
        "id": job_id,
        "prompt": "x",
        "model": "local",
        "images": [{"image_url": "data:image/png;base64," + base64.b64encode(image).decode()}],
        "mask": {"image_url": "data:image/png;base64," + base64.b64encode(mask).decode()},
    }
    faulty_s3.inject("PUT", rf"/inputs/.*/{job_id}/mask\.png", status=403, code="AccessDenied", times=1)
    record = sqs_record(body)
    # When the worker runs it: the message is handed back (a storage failure is transient), the image written is deleted
    assert worker.lambda_handler({"Records": [record]}, lambda_context) == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert [status for *_, status in faulty_s3.requests("PUT", rf"/{job_id}/image-0\.png")] == [200]  # it was written
    assert faulty_s3.requests("POST", r"\?delete")  # then deleted (DeleteObjects)
    assert inputs_of(s3, local_s3.bucket, job_id) == {}
    # And its next delivery edits and stores both inputs
    again = {**record, "attributes": {**record["attributes"], "ApproximateReceiveCount": "2"}}
    assert worker.lambda_handler({"Records": [again]}, lambda_context) == {"batchItemFailures": []}
    done = manifest(s3, local_s3.bucket, f"results/{job_id}.json")
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert set(inputs_of(s3, local_s3.bucket, job_id)) == {"image-0.png", "mask.png"}
    assert pixels(stored_image(s3, local_s3.bucket, done)) == ((64, 64), CYAN, RED, hashlib.sha256(image).hexdigest())
