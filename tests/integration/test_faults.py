"""Fault injection: the provider (fake OpenAI on loopback) and S3 (a fault-injecting proxy in front of the real S3
server) fail in the ways they do in production. Each fault gets its status from the table in README/errors.py, the
client never sees a stack trace or a key, and nothing of the failed request stays in the bucket."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import urllib.request

import httpx
import pytest
from PIL import Image as PILImage

from functions.api import app
from imagegen.storage import ImageStore, StoredObject, image_key
from tests.conftest import load_event
from tests.fakes.s3_fault_proxy import S3FaultProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def faulty_s3(local_s3, s3_proxy, monkeypatch) -> S3FaultProxy:
    """The code under test reaches S3 (and signs its URLs) through the proxy, as it would any endpoint."""
    s3_proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint_url)
    return s3_proxy


def invoke(lambda_context, event):
    response = app.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"]), response


def stored_for(s3, bucket: str, request_id: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="images/").get("Contents", [])
    return sorted(obj["Key"] for obj in listed if f"/{request_id}/" in obj["Key"])


def attempts(fake, prompt: str) -> int:
    return sum(1 for request in fake.requests if request["json"]["prompt"] == prompt)


def assert_openai_error(body, status: int, code: str) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code, (status, body)
    text = json.dumps(body)
    assert "sk-" not in text and "Traceback" not in text and "<html" not in text.lower()


# --- the provider -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "status", "code", "tries"),
    [
        ("fail:429-bare", 429, "rate_limit_exceeded", 3),  # retried with backoff, then passed on (no Retry-After to pass)
        ("fail:503", 502, "provider_error", 3),
        ("fail:500", 502, "provider_error", 3),
        ("fail:html-502", 502, "provider_error", 3),  # a proxy's HTML page instead of OpenAI's JSON error
        ("fail:html", 502, "provider_bad_response", 1),  # 200 with a body that is not JSON
        ("fail:malformed", 502, "provider_bad_response", 1),  # 200 with JSON cut short
        ("fail:truncated", 502, "provider_unreachable", 3),  # the connection closes before the promised body ends
        ("fail:short", 502, "provider_bad_response", 1),  # one image fewer than asked: none are stored
        ("fail:not-image", 502, "provider_bad_response", 1),  # image k of n is not an image: none are stored
        ("fail:bad-base64", 502, "provider_bad_response", 1),
    ],
)
def test_provider_fault_has_its_status_and_stores_nothing(openai_env, local_s3, s3, lambda_context, prompt, status, code, tries) -> None:
    event = load_event("api_generate_url.json", prompt=prompt, model="gpt-image-1-mini", size="1024x1024", n=3)
    request_id = event["requestContext"]["requestId"]
    got, body, response = invoke(lambda_context, event)
    assert got == status, body
    assert_openai_error(body, status, code)
    assert attempts(openai_env, prompt) == tries
    assert stored_for(s3, local_s3.bucket, request_id) == []
    if prompt == "fail:429-bare":
        assert "Retry-After" not in response["multiValueHeaders"]


def test_429_with_retry_after_is_waited_out_then_succeeds(openai_env, local_s3, s3, lambda_context) -> None:
    prompt = f"flaky429:1:{time.time_ns()}"
    event = load_event("api_generate_url.json", prompt=prompt, model="gpt-image-1-mini", size="1024x1024", n=2)
    started = time.monotonic()
    status, body, _ = invoke(lambda_context, event)
    assert status == 200, body
    assert time.monotonic() - started >= 1.0  # the provider's Retry-After: 1 was honoured
    assert attempts(openai_env, prompt) == 2
    assert len(stored_for(s3, local_s3.bucket, event["requestContext"]["requestId"])) == 2


def test_429_that_outlasts_the_deadline_is_passed_on_with_retry_after(openai_env, local_s3, s3, lambda_context) -> None:
    lambda_context.remaining_millis = 5000  # 2.5 s for the provider: one wait of 1 s fits, a second does not
    event = load_event("api_generate_url.json", prompt="fail:429", model="gpt-image-1-mini", size="1024x1024", n=2)
    status, body, response = invoke(lambda_context, event)
    assert (status, response["multiValueHeaders"]["Retry-After"]) == (429, ["1"])
    assert_openai_error(body, 429, "rate_limit_exceeded")
    assert attempts(openai_env, "fail:429") == 2
    assert stored_for(s3, local_s3.bucket, event["requestContext"]["requestId"]) == []


def test_slow_provider_past_the_deadline_is_504_storing_nothing(openai_env, local_s3, s3, lambda_context) -> None:
    lambda_context.remaining_millis = 4000  # minus the 2.5 s margin: 1.5 s for the provider
    event = load_event("api_generate_b64.json", prompt="fail:slow", model="gpt-image-1-mini", size="1024x1024", n=1)
    started = time.monotonic()
    status, body, _ = invoke(lambda_context, event)
    assert status == 504 and time.monotonic() - started < 3.0
    assert_openai_error(body, 504, "provider_timeout")
    assert attempts(openai_env, "fail:slow") == 1  # a timeout used the time up: no retry
    assert stored_for(s3, local_s3.bucket, event["requestContext"]["requestId"]) == []


# --- S3 -----------------------------------------------------------------------------------------------------------


def test_presigned_urls_signed_for_the_proxy_serve_the_images(faulty_s3, local_s3, lambda_context) -> None:
    event = load_event("api_generate_url.json", n=2, size="256x256")
    status, body, _ = invoke(lambda_context, event)
    assert status == 200, body
    for item in body["data"]:
        assert item["url"].startswith(faulty_s3.endpoint_url)
        fetched = httpx.get(item["url"], timeout=10)
        assert fetched.status_code == 200
        assert PILImage.open(io.BytesIO(fetched.content)).size == (256, 256)
    assert len(faulty_s3.requests("PUT", event["requestContext"]["requestId"])) == 2


@pytest.mark.parametrize(("failing", "n", "response_format"), [(0, 3, "url"), (2, 3, "b64_json"), (4, 5, "url")])
def test_put_failing_on_image_k_of_n_is_502_and_leaves_none_of_them(
    faulty_s3, local_s3, s3, lambda_context, failing, n, response_format, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")
    event = load_event("api_generate_url.json", n=n, size="256x256", responseFormat=response_format)
    request_id = event["requestContext"]["requestId"]
    faulty_s3.inject("PUT", rf"/{request_id}/{failing}\.png")
    status, body, _ = invoke(lambda_context, event)
    assert status == 502, body
    assert_openai_error(body, 502, "storage_error")
    assert stored_for(s3, local_s3.bucket, request_id) == []
    puts = faulty_s3.requests("PUT", request_id)
    assert len([put for put in puts if put[2] == 500]) >= 2  # the SDK's standard retries, then the write failed
    assert len([put for put in puts if put[2] == 200]) == n - 1  # the others were written...
    assert faulty_s3.requests("POST", r"\?delete")  # ...and deleted again
    # the provider's images were made (and, for a priced model, paid for) but not delivered: counted, not billed
    lost = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"UndeliveredImages"' in line]
    assert [(record["model"], record["UndeliveredImages"]) for record in lost] == [("local", [float(n)])]


def test_put_failing_once_is_retried_by_the_sdk_and_succeeds(faulty_s3, local_s3, s3, lambda_context) -> None:
    event = load_event("api_generate_url.json", n=3, size="256x256")
    request_id = event["requestContext"]["requestId"]
    faulty_s3.inject("PUT", rf"/{request_id}/1\.png", times=1, status=503, code="SlowDown")
    status, body, _ = invoke(lambda_context, event)
    assert status == 200, body
    assert len(stored_for(s3, local_s3.bucket, request_id)) == 3


def test_every_put_failing_is_502_and_leaves_nothing(faulty_s3, local_s3, s3, lambda_context) -> None:
    event = load_event("api_generate_url.json", n=2, size="256x256")
    request_id = event["requestContext"]["requestId"]
    faulty_s3.inject("PUT", request_id, status=403, code="AccessDenied")
    status, body, _ = invoke(lambda_context, event)
    assert status == 502
    assert_openai_error(body, 502, "storage_error")
    assert stored_for(s3, local_s3.bucket, request_id) == []


def test_clean_up_failing_too_still_answers_a_clean_502(faulty_s3, local_s3, s3, lambda_context) -> None:
    """The documented limit: when S3 also refuses the clean-up, the written images stay (unreferenced: no answer
    named them) until the bucket's lifecycle rule expires them; the client still gets a plain 502."""
    event = load_event("api_generate_url.json", n=3, size="256x256")
    request_id = event["requestContext"]["requestId"]
    faulty_s3.inject("PUT", rf"/{request_id}/0\.png")
    faulty_s3.inject("POST", r"\?delete")
    status, body, _ = invoke(lambda_context, event)
    assert status == 502
    assert_openai_error(body, 502, "storage_error")
    assert [key.rsplit("/", 1)[1] for key in stored_for(s3, local_s3.bucket, request_id)] == ["1.png", "2.png"]


# --- S3 slower than the request's deadline ---------------------------------------------------------------------


def test_a_stalled_put_is_a_504_before_the_lambda_ends_leaving_nothing(faulty_s3, local_s3, s3, lambda_context) -> None:
    # 4 s left: the provider's deadline is 1.5 s away (2.5 s margin); S3 never answers the write of image 1
    lambda_context.remaining_millis = 4000
    event = load_event("api_generate_url.json", n=3, size="256x256")
    request_id = event["requestContext"]["requestId"]
    faulty_s3.inject("PUT", rf"/{request_id}/1\.png", mode="stall")
    started = time.monotonic()
    status, body, _ = invoke(lambda_context, event)
    elapsed = time.monotonic() - started
    assert status == 504, body
    assert_openai_error(body, 504, "storage_timeout")
    assert elapsed < 4.0  # answered while the Lambda (and API Gateway) still wait for it
    assert stored_for(s3, local_s3.bucket, request_id) == []  # 0 and 2 were written, then deleted before the answer
    faulty_s3.release()
    time.sleep(0.5)
    assert stored_for(s3, local_s3.bucket, request_id) == []


def test_a_write_stored_but_answered_after_the_give_up_is_deleted(faulty_s3, local_s3, s3, lambda_context) -> None:
    """S3 stores image 0 at once, but its answer trickles in (no silence long enough for the SDK's read timeout),
    so the write is still unanswered at the deadline. It is deleted with the written ones before the 504, and
    again when its answer finally arrives."""
    lambda_context.remaining_millis = 4000
    event = load_event("api_generate_url.json", n=2, size="256x256", responseFormat="b64_json")
    request_id = event["requestContext"]["requestId"]
    faulty_s3.inject("PUT", rf"/{request_id}/0\.png", mode="drip", seconds=5.0)
    status, body, _ = invoke(lambda_context, event)
    assert status == 504, body
    assert_openai_error(body, 504, "storage_timeout")
    assert stored_for(s3, local_s3.bucket, request_id) == []
    ends = time.monotonic() + 10
    while not faulty_s3.requests("PUT", rf"/{request_id}/0\.png") and time.monotonic() < ends:
        time.sleep(0.1)
    assert [entry[2] for entry in faulty_s3.requests("PUT", rf"/{request_id}/0\.png")] == [200]  # S3 had stored it
    time.sleep(0.5)
    assert stored_for(s3, local_s3.bucket, request_id) == []


# --- what S3 serves back: an SVG may carry script -----------------------------------------------------------------
# Opened from a presigned URL it must download, not render on the bucket's origin. S3 answers a GET with the
# Content-Disposition stored with the object, so SVGs are stored as attachments.

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>'
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def test_a_presigned_svg_downloads_and_a_png_still_shows(s3_server) -> None:
    store = ImageStore(s3_server.client(), s3_server.bucket)
    now = dt.datetime.now(dt.UTC)
    svg, png = image_key("svg-attachment", 0, "svg", now), image_key("svg-attachment", 1, "png", now)
    store.put_all([StoredObject(svg, SVG, "image/svg+xml"), StoredObject(png, PNG, "image/png")], {"model": "gpt-image-2"})
    with urllib.request.urlopen(store.presign(svg, 60)) as fetched:
        assert (fetched.headers["Content-Type"], fetched.headers["Content-Disposition"]) == ("image/svg+xml", "attachment")
        assert fetched.read() == SVG
    with urllib.request.urlopen(store.presign(png, 60)) as fetched:
        assert fetched.headers["Content-Type"] == "image/png" and fetched.headers["Content-Disposition"] is None
