"""The local stack's auth settings (environment -> mode, keys, credentials) and its gateway error bodies, which
follow the gateway response type as template.yaml's GatewayResponses do. No sockets: nothing is started."""

from __future__ import annotations

import json

import pytest

from devtools.front import ApiGatewayFront, GatewayError
from devtools.local import LocalStack, auth_line, auth_settings, openai_error_body
from devtools.rie import Invocation


def error_of(error: GatewayError) -> dict:
    return json.loads(openai_error_body(error))["error"]


def test_api_key_errors_keep_their_codes() -> None:
    missing = error_of(GatewayError(401, "Missing API key: send 'Authorization: Bearer <key>'.", response_type="UNAUTHORIZED"))
    unknown = error_of(GatewayError(403, "Incorrect API key provided.", response_type="INVALID_API_KEY"))
    assert missing == {
        "message": "Missing API key: send 'Authorization: Bearer <key>'.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert (unknown["code"], unknown["message"]) == ("invalid_api_key", "Incorrect API key provided.")
    assert (error_of(GatewayError(429, "Too Many Requests"))["code"], error_of(GatewayError(429, "x"))["type"]) == (
        "rate_limit_exceeded",
        "rate_limit_error",
    )


def test_iam_errors_follow_the_response_type_not_the_status() -> None:
    missing = error_of(GatewayError(403, "Missing Authentication Token", response_type="MISSING_AUTHENTICATION_TOKEN"))
    assert missing == {
        "message": "Missing authentication: sign the request with AWS Signature Version 4 (service execute-api), "
        "or check the method and path.",
        "type": "invalid_request_error",
        "param": None,
        "code": "missing_authentication",
    }
    expired = error_of(GatewayError(403, "Signature expired: 20240101T000000Z is now earlier than ...", response_type="INVALID_SIGNATURE"))
    assert expired == {
        "message": "Signature expired: 20240101T000000Z is now earlier than ...",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_signature",
    }


def test_other_gateway_errors_have_no_code() -> None:
    assert error_of(GatewayError(413, "Request Too Long")) == {
        "message": "Request Too Long",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert error_of(GatewayError(504, "Endpoint request timed out"))["type"] == "api_error"


def test_auth_settings_default_to_api_keys() -> None:
    assert auth_settings({}) == ("ApiKey", [], {})
    assert auth_settings({"IMAGEGEN_API_KEYS": " k1 ,k2,, "}) == ("ApiKey", ["k1", "k2"], {})


def test_auth_settings_for_iam() -> None:
    environ = {"IMAGEGEN_AUTH_MODE": "iam", "IMAGEGEN_IAM_CREDENTIALS": "AKIDONE:secret/one, AKIDTWO:sec:ret"}
    assert auth_settings(environ) == ("IAM", [], {"AKIDONE": "secret/one", "AKIDTWO": "sec:ret"})


@pytest.mark.parametrize(
    ("environ", "complaint"),
    [
        ({"IMAGEGEN_AUTH_MODE": "IAM"}, "IMAGEGEN_AUTH_MODE=IAM needs IMAGEGEN_IAM_CREDENTIALS"),
        ({"IMAGEGEN_AUTH_MODE": "IAM", "IMAGEGEN_IAM_CREDENTIALS": "AKIDONE"}, "entry 1 is not ACCESS_KEY_ID:SECRET_ACCESS_KEY"),
        ({"IMAGEGEN_AUTH_MODE": "IAM", "IMAGEGEN_IAM_CREDENTIALS": "AKIDONE:s1,:topsecret"}, "entry 2 is not"),
        ({"IMAGEGEN_AUTH_MODE": "IAM", "IMAGEGEN_IAM_CREDENTIALS": "AKIDONE:s1", "IMAGEGEN_API_KEYS": "k"}, "unset it for IAM"),
        ({"IMAGEGEN_IAM_CREDENTIALS": "AKIDONE:topsecret"}, "applies to IMAGEGEN_AUTH_MODE=IAM"),
        ({"IMAGEGEN_AUTH_MODE": "Cognito"}, "must be ApiKey or IAM, not 'Cognito'"),
    ],
)
def test_auth_settings_refuse_what_the_gateway_cannot_honour(environ: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        auth_settings(environ)
    assert "topsecret" not in str(caught.value)


def never(event: bytes, timeout: float) -> Invocation:
    raise AssertionError("not invoked")


def test_iam_without_credentials_fails_at_construction(tmp_path) -> None:
    with pytest.raises(ValueError, match="auth mode IAM needs iam_credentials"):
        ApiGatewayFront(never, auth_mode="IAM")
    with pytest.raises(ValueError, match="auth mode IAM needs iam_credentials"):
        LocalStack(data_dir=tmp_path, port=0, s3_port=0, auth_mode="IAM", iam_credentials={})
    with pytest.raises(ValueError, match="ApiKey only"):
        ApiGatewayFront(never, auth_mode="IAM", iam_credentials={"AKIDONE": "s"}, api_keys=["k" * 24])


def test_banner_names_the_mode_and_keys_never_secrets() -> None:
    iam = auth_line(ApiGatewayFront(never, auth_mode="IAM", iam_credentials={"AKIDTWO": "topsecret", "AKIDONE": "s"}))
    assert iam == "  auth      IAM: AWS SigV4 (service execute-api, region us-east-1) by access key AKIDONE, AKIDTWO"
    assert "ApiKey" in auth_line(ApiGatewayFront(never, api_keys=["k" * 24]))
    assert "off" in auth_line(ApiGatewayFront(never))
