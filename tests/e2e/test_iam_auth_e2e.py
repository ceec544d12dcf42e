"""IAM (SigV4) auth through the local stack, as the deployed gateway with AuthMode=IAM answers: unsigned 403
missing_authentication, a bad, stale or foreign signature 403 invalid_signature, public routes open; a botocore
signature (devtools.sigv4.SigV4Auth, also under the official SDK) is all a client needs. A front over an in-process
function shows what reaches the function: nothing for a refusal, the caller in requestContext.identity otherwise."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from botocore.credentials import Credentials

from devtools.front import ApiGatewayFront
from devtools.local import LocalStack, gateway_error_body
from devtools.rie import Invocation
from devtools.sigv4 import MISMATCH_MESSAGE, UNKNOWN_KEY_MESSAGE, SigV4Auth
from tests.e2e.conftest import own_stack
from tests.signing import signed_headers_at

pytestmark = pytest.mark.e2e

ACCESS_KEY = "AKIALOCAL" + secrets.token_hex(6).upper()
SECRET = secrets.token_urlsafe(30)
CREDENTIALS = Credentials(ACCESS_KEY, SECRET)
BODY = {"prompt": "a red fox", "model": "local", "size": "256x256"}
MISSING_AUTHENTICATION = (
    "Missing authentication: sign the request with AWS Signature Version 4 (service execute-api), or check the method and path."
)


@pytest.fixture(scope="module")
def iam_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = own_stack(
        tmp_path_factory,
        "iam",
        workers=1,
        async_jobs=False,
        auth_mode="IAM",
        iam_credentials={ACCESS_KEY: SECRET},
    )
    with stack:
        yield stack


def generate(stack: LocalStack, auth: httpx.Auth | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{stack.base_url}/v1/images/generations", json=BODY, headers=headers, auth=auth, timeout=30)


def refused(response: httpx.Response, code: str) -> dict:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, None)
    assert response.headers["Connection"] == "close"
    return error


def test_unsigned_requests_are_missing_authentication(iam_stack) -> None:
    for response in (generate(iam_stack), httpx.get(f"{iam_stack.base_url}/v1/models", timeout=30)):
        assert refused(response, "missing_authentication")["message"] == MISSING_AUTHENTICATION


def test_a_bearer_key_is_not_a_signature_and_is_never_echoed(iam_stack) -> None:
    key = "sk-imagegen-" + secrets.token_hex(12)
    error = refused(generate(iam_stack, headers={"Authorization": f"Bearer {key}"}), "invalid_signature")
    assert error["message"].startswith("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'")
    assert key not in error["message"]


def test_wrong_secret_and_unknown_key_are_invalid_signatures(iam_stack) -> None:
    wrong_secret = refused(generate(iam_stack, SigV4Auth(Credentials(ACCESS_KEY, "not-" + SECRET))), "invalid_signature")
    assert wrong_secret["message"] == MISMATCH_MESSAGE
    unknown = refused(generate(iam_stack, SigV4Auth(Credentials("AKIAUNKNOWN000000000", SECRET))), "invalid_signature")
    assert unknown["message"] == UNKNOWN_KEY_MESSAGE


def signed_request(stack: LocalStack) -> httpx.Request:
    request = httpx.Request("POST", f"{stack.base_url}/v1/images/generations", json=BODY)
    return next(SigV4Auth(CREDENTIALS).sync_auth_flow(request))


def test_body_changed_after_signing_is_refused(iam_stack) -> None:
    signed = signed_request(iam_stack)
    with httpx.Client(timeout=30) as client:
        assert client.send(signed).status_code == 200  # the same request, untouched, is fine
        swapped = signed.content.replace(b"a red fox", b"a red cat")  # same length: only the signature can tell
        tampered = httpx.Request("POST", signed.url, headers=signed.headers, content=swapped)
        assert refused(client.send(tampered), "invalid_signature")["message"] == MISMATCH_MESSAGE


def test_a_stale_signature_has_expired(iam_stack) -> None:
    url = f"{iam_stack.base_url}/v1/models"
    signed_at = datetime.now(UTC) - timedelta(minutes=6)
    response = httpx.get(url, headers=signed_headers_at(signed_at, CREDENTIALS, "GET", url), timeout=30)
    assert refused(response, "invalid_signature")["message"].startswith(
        f"Signature expired: {signed_at:%Y%m%dT%H%M%SZ} is now earlier than"
    )
    fresh = httpx.get(url, headers=signed_headers_at(datetime.now(UTC), CREDENTIALS, "GET", url), timeout=30)
    assert fresh.status_code == 200, fresh.text


def test_a_good_signature_generates_images(iam_stack) -> None:
    response = generate(iam_stack, SigV4Auth(CREDENTIALS))
    assert response.status_code == 200, response.text
    assert [bool(image["url"]) for image in response.json()["data"]] == [True]
    assert httpx.get(response.json()["data"][0]["url"], timeout=30).content.startswith(b"\x89PNG")


@pytest.mark.parametrize("path", ["/", "/health", "/openapi.json", "/docs"])
def test_public_routes_need_no_signature(iam_stack, path) -> None:
    assert httpx.get(f"{iam_stack.base_url}{path}", timeout=30).status_code == 200


def test_official_sdk_with_sigv4_http_client(iam_stack) -> None:
    from openai import OpenAI, PermissionDeniedError

    def client(credentials: Credentials) -> OpenAI:
        http_client = httpx.Client(auth=SigV4Auth(credentials, region="us-east-1"), timeout=30)
        return OpenAI(base_url=f"{iam_stack.base_url}/v1", api_key="unused", http_client=http_client, max_retries=0)

    image = client(CREDENTIALS).images.generate(model="local", prompt="a fox", size="256x256", response_format="b64_json")
    assert image.data and image.data[0].b64_json
    assert [model.id for model in client(CREDENTIALS).models.list()]
    with pytest.raises(PermissionDeniedError) as caught:
        client(Credentials(ACCESS_KEY, "wrong")).models.list()
    assert caught.value.code == "invalid_signature"


class Recorder:
    """An in-process function behind the front: keeps each event and answers 200."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: bytes, timeout: float) -> Invocation:
        self.events.append(json.loads(event))
        return Invocation(200, json.dumps({"statusCode": 200, "body": "{}"}).encode())


@pytest.fixture
def recorded(tmp_path) -> Iterator[tuple[ApiGatewayFront, Recorder]]:
    recorder = Recorder()
    front = ApiGatewayFront(
        recorder,
        port=0,
        auth_mode="IAM",
        iam_credentials={ACCESS_KEY: SECRET},
        error_body=gateway_error_body("IAM"),
        log_path=tmp_path / "f.log",
    )
    with front:
        yield front, recorder


def test_refusals_never_reach_the_function(recorded) -> None:
    front, recorder = recorded
    url = f"{front.base_url}/v1/images/generations"
    responses = [
        httpx.post(url, json=BODY),
        httpx.post(url, json=BODY, headers={"Authorization": "Bearer " + "k" * 32}),
        httpx.post(url, json=BODY, auth=SigV4Auth(Credentials(ACCESS_KEY, "wrong"))),
        httpx.post(url, json=BODY, auth=SigV4Auth(Credentials("AKIAUNKNOWN000000000", SECRET))),
    ]
    assert [response.status_code for response in responses] == [403] * 4
    assert [response.json()["error"]["code"] for response in responses] == ["missing_authentication"] + ["invalid_signature"] * 3
    assert recorder.events == []


def test_the_function_sees_the_iam_caller(recorded) -> None:
    front, recorder = recorded
    assert httpx.post(f"{front.base_url}/v1/images/generations", json=BODY, auth=SigV4Auth(CREDENTIALS)).status_code == 200
    identity = recorder.events[-1]["requestContext"]["identity"]
    assert identity["userArn"] == f"arn:aws:iam::123456789012:user/local-{ACCESS_KEY}"
    assert (identity["accessKey"], identity["caller"], identity["user"], identity["accountId"]) == (
        ACCESS_KEY,
        ACCESS_KEY,
        ACCESS_KEY,
        "123456789012",
    )
    assert recorder.events[-1]["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")


def test_public_routes_and_api_key_mode_carry_no_caller(recorded) -> None:
    front, recorder = recorded
    assert httpx.get(f"{front.base_url}/health").status_code == 200
    with ApiGatewayFront(recorder, port=0) as open_front:  # ApiKey mode with no keys: auth off, as today
        assert httpx.get(f"{open_front.base_url}/v1/models", auth=SigV4Auth(CREDENTIALS)).status_code == 200
    for event in recorder.events:
        identity = event["requestContext"]["identity"]
        assert [identity[field] for field in ("accessKey", "caller", "user", "userArn", "accountId")] == [None] * 5


def test_body_limit_holds_with_a_signature_and_unsigned_bodies_are_not_read(recorded) -> None:
    front, recorder = recorded
    url = f"{front.base_url}/v1/images/generations"
    big = b"x" * (10 * 1024 * 1024 + 1)
    too_long = httpx.post(url, content=big, auth=SigV4Auth(CREDENTIALS), timeout=30)
    # template.yaml's REQUEST_TOO_LARGE gateway response, as API Gateway renders it
    assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "request_too_large"
    assert too_long.json()["error"]["message"].startswith("The request body is above API Gateway's 10 MB limit.")
    unsigned = httpx.post(url, content=big, timeout=30)
    assert unsigned.status_code == 403 and unsigned.json()["error"]["code"] == "missing_authentication"
    assert recorder.events == []
