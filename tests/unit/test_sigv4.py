"""devtools/sigv4.py without sockets: the httpx client signature and the local gateway's verdict on each request,
signed by botocore (through SigV4Auth, or by hand at a chosen time) and then tampered with."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from botocore.credentials import Credentials

from devtools.sigv4 import (
    HOST_NOT_SIGNED_MESSAGE,
    INVALID_SIGNATURE,
    MALFORMED_MESSAGE,
    MISMATCH_MESSAGE,
    MISSING_AUTHENTICATION_TOKEN,
    MISSING_DATE_MESSAGE,
    MISSING_TOKEN_MESSAGE,
    QUERY_SIGNATURE_MESSAGE,
    UNKNOWN_KEY_MESSAGE,
    Caller,
    SignatureError,
    SigV4Auth,
    SigV4Verifier,
)
from tests.signing import signed_headers_at

ACCESS_KEY = "AKIAUNITTESTLOCAL001"
SECRET = "unit-secret/with+odd=characters"
URL = "http://127.0.0.1:3000/v1/images/generations"
BODY = b'{"prompt": "a red fox", "size": "256x256"}'
BEARER = "Bearer sk-imagegen-0123456789abcdef0123"

verifier = SigV4Verifier({ACCESS_KEY: SECRET, "AKIAOTHERKEY00000000": "other-secret"})


def sign(request: httpx.Request, credentials: Credentials | None = None, region: str = "us-east-1") -> httpx.Request:
    """The request as SigV4Auth sends it (httpx runs the same flow before each send)."""
    return next(SigV4Auth(credentials or Credentials(ACCESS_KEY, SECRET), region=region).sync_auth_flow(request))


def post(**headers: str) -> httpx.Request:
    return httpx.Request("POST", URL, content=BODY, headers={"Content-Type": "application/json", **headers})


def target(request: httpx.Request) -> str:
    return request.url.raw_path.decode()


def verify(request: httpx.Request, body: bytes | None = None) -> Caller:
    return verifier.verify(request.method, target(request), request.headers.multi_items(), request.content if body is None else body)


def refusal(request: httpx.Request, body: bytes | None = None) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(request, body)
    return caught.value


def test_signed_request_replaces_the_bearer_key_and_verifies() -> None:
    signed = sign(post(Authorization=BEARER))
    authorizations = signed.headers.get_list("Authorization")
    day = datetime.now(UTC).strftime("%Y%m%d")
    assert len(authorizations) == 1
    assert authorizations[0].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{day}/us-east-1/execute-api/aws4_request, ")
    assert "host" in authorizations[0].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert signed.headers["X-Amz-Date"].startswith(day)
    caller = verify(signed)
    assert caller == Caller(ACCESS_KEY, "123456789012")
    assert caller.identity() == {
        "accessKey": ACCESS_KEY,
        "accountId": "123456789012",
        "caller": ACCESS_KEY,
        "user": ACCESS_KEY,
        "userArn": f"arn:aws:iam::123456789012:user/local-{ACCESS_KEY}",
    }


def test_query_strings_repeated_headers_and_empty_bodies_verify() -> None:
    request = httpx.Request("GET", URL + "?b=2&a=x%20y&a=1&empty=", headers=[("X-Multi", "one"), ("X-Multi", "two")])
    signed = sign(request)
    assert signed.content == b""
    assert verify(signed).access_key == ACCESS_KEY
    moved = httpx.Request("GET", URL + "?b=3&a=x%20y&a=1&empty=", headers=signed.headers)
    assert refusal(moved).message == MISMATCH_MESSAGE


def test_session_token_is_signed_and_checked() -> None:
    signed = sign(post(), Credentials(ACCESS_KEY, SECRET, token="session-token-1"))
    assert signed.headers["X-Amz-Security-Token"] == "session-token-1"
    assert verify(signed).access_key == ACCESS_KEY
    signed.headers["X-Amz-Security-Token"] = "session-token-2"
    assert refusal(signed).message == MISMATCH_MESSAGE


def test_a_date_header_stands_in_for_x_amz_date() -> None:
    signed = sign(post(Date="Mon, 01 Jan 2024 00:00:00 GMT"))
    assert "X-Amz-Date" not in signed.headers
    assert verify(signed).access_key == ACCESS_KEY  # botocore re-dated the Date header to now


def tampered(change: Callable[[httpx.Request], object]) -> Callable[[], httpx.Request]:
    def build() -> httpx.Request:
        signed = sign(post())
        change(signed)
        return signed

    return build


def set_header(name: str, value: str) -> Callable[[httpx.Request], None]:
    return lambda request: request.headers.__setitem__(name, value)


def edit_authorization(old: str, new: str) -> Callable[[httpx.Request], None]:
    return lambda request: request.headers.__setitem__("Authorization", request.headers["Authorization"].replace(old, new))


# Requests are built when the test runs, not at collection: a signature made then could be stale by now.
@pytest.mark.parametrize(
    ("build", "response_type", "message"),
    [
        pytest.param(post, MISSING_AUTHENTICATION_TOKEN, MISSING_TOKEN_MESSAGE, id="unsigned"),
        pytest.param(lambda: post(Authorization=BEARER), INVALID_SIGNATURE, MALFORMED_MESSAGE, id="bearer"),
        pytest.param(lambda: post(Authorization="AWS4-HMAC-SHA256"), INVALID_SIGNATURE, MALFORMED_MESSAGE, id="bare-algorithm"),
        pytest.param(tampered(edit_authorization(", Signature=", ", Sig=")), INVALID_SIGNATURE, MALFORMED_MESSAGE, id="no-signature"),
        pytest.param(
            lambda: sign(post(), Credentials("AKIAUNKNOWN000000000", SECRET)), INVALID_SIGNATURE, UNKNOWN_KEY_MESSAGE, id="unknown-key"
        ),
        pytest.param(lambda: sign(post(), Credentials(ACCESS_KEY, "wrong-secret")), INVALID_SIGNATURE, MISMATCH_MESSAGE, id="wrong-secret"),
        pytest.param(
            lambda: sign(post(), Credentials("AKIAOTHERKEY00000000", SECRET)),
            INVALID_SIGNATURE,
            MISMATCH_MESSAGE,
            id="another-keys-secret",
        ),
        pytest.param(tampered(set_header("Content-Type", "text/plain")), INVALID_SIGNATURE, MISMATCH_MESSAGE, id="signed-header"),
        pytest.param(tampered(edit_authorization("Signature=", "Signature=0")), INVALID_SIGNATURE, MISMATCH_MESSAGE, id="signature"),
        pytest.param(tampered(lambda r: r.headers.pop("X-Amz-Date")), INVALID_SIGNATURE, MISSING_DATE_MESSAGE, id="no-date"),
        pytest.param(tampered(edit_authorization("host;", "")), INVALID_SIGNATURE, HOST_NOT_SIGNED_MESSAGE, id="host-not-signed"),
        pytest.param(
            lambda: sign(post(), region="eu-west-1"),
            INVALID_SIGNATURE,
            "Credential should be scoped to a valid region, not 'eu-west-1'.",
            id="region",
        ),
        pytest.param(
            tampered(edit_authorization("/execute-api/", "/lambda/")),
            INVALID_SIGNATURE,
            "Credential should be scoped to correct service: 'execute-api'.",
            id="service",
        ),
        pytest.param(
            tampered(set_header("X-Amz-Date", "2024-01-01T00:00:00Z")),
            INVALID_SIGNATURE,
            "Date must be in ISO-8601 'basic format'. Got '2024-01-01T00:00:00Z'.",
            id="date-format",
        ),
        pytest.param(
            lambda: httpx.Request("GET", URL + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00"),
            INVALID_SIGNATURE,
            QUERY_SIGNATURE_MESSAGE,
            id="presigned-url",
        ),
    ],
)
def test_refusals_name_the_gateway_response(build: Callable[[], httpx.Request], response_type: str, message: str) -> None:
    error = refusal(build())
    assert (error.response_type, error.message) == (response_type, message)
    assert "sk-imagegen" not in error.message and SECRET not in error.message


def test_credential_scope_day_must_match_the_request_date() -> None:
    signed = sign(post())
    real_day = signed.headers["X-Amz-Date"][:8]
    signed.headers["Authorization"] = signed.headers["Authorization"].replace(f"/{real_day}/", "/20200101/")
    assert refusal(signed).message.startswith(
        f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20200101' != '{real_day}'"
    )


def test_body_changed_after_signing_is_a_mismatch() -> None:
    signed = sign(post())
    assert verify(signed).access_key == ACCESS_KEY
    assert refusal(signed, BODY.replace(b"fox", b"cat")).message == MISMATCH_MESSAGE


def test_a_signed_payload_hash_header_cannot_vouch_for_another_body() -> None:
    # botocore takes X-Amz-Content-SHA256 as the body's hash: signed honestly, then the body swapped.
    signed = sign(post(**{"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()}))
    assert verify(signed).access_key == ACCESS_KEY
    assert refusal(signed, b'{"prompt": "something else"}').message == MISMATCH_MESSAGE


def test_check_needs_no_body_and_stops_before_the_signature() -> None:
    signed = sign(post(), Credentials(ACCESS_KEY, "wrong-secret"))
    assert verifier.check(target(signed), signed.headers.multi_items()).access_key == ACCESS_KEY  # the body decides later
    with pytest.raises(SignatureError, match="security token"):
        unknown = sign(post(), Credentials("AKIAUNKNOWN000000000", SECRET))
        verifier.check(target(unknown), unknown.headers.multi_items())


def hand_signed(moment: datetime) -> httpx.Request:
    headers = signed_headers_at(moment, Credentials(ACCESS_KEY, SECRET), "POST", URL, BODY, {"Content-Type": "application/json"})
    return httpx.Request("POST", URL, content=BODY, headers=headers)


def test_botocore_signatures_within_five_minutes_verify() -> None:
    for skew in (timedelta(minutes=-4), timedelta(0), timedelta(minutes=4)):
        assert verify(hand_signed(datetime.now(UTC) + skew)).access_key == ACCESS_KEY


def test_signature_older_than_five_minutes_has_expired() -> None:
    signed_at = datetime.now(UTC) - timedelta(minutes=6)
    error = refusal(hand_signed(signed_at))
    stamp = signed_at.strftime("%Y%m%dT%H%M%SZ")
    assert error.response_type == INVALID_SIGNATURE
    assert error.message.startswith(f"Signature expired: {stamp} is now earlier than ")
    assert error.message.endswith(" - 5 min.)")


def test_signature_from_more_than_five_minutes_ahead_is_not_yet_current() -> None:
    signed_at = datetime.now(UTC) + timedelta(minutes=6)
    error = refusal(hand_signed(signed_at))
    assert error.message.startswith(f"Signature not yet current: {signed_at:%Y%m%dT%H%M%SZ} is still later than ")
    assert error.message.endswith(" + 5 min.)")
