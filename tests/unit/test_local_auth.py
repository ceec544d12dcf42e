"""The local stack's auth settings (environment -> mode, keys, credentials) and its gateway error bodies, rendered
from template.yaml's GatewayResponses for the stack's AuthMode as API Gateway renders them. No sockets: nothing is
started. Expectations come from template.yaml itself, its ``!If`` branches picked here by hand, so the renderer's
choice of branch (AWS::LanguageExtensions) is checked, not repeated."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from devtools import front, local, sigv4
from devtools.front import AUTH_MODES, ApiGatewayFront, AuthMode, GatewayError, aws_error_body
from devtools.local import LocalStack, TemplateErrorBody, auth_line, auth_settings, gateway_error_body, gateway_responses
from devtools.rie import Invocation
from devtools.sam_template import TEMPLATE, load_template

MESSAGE_STRING = "$context.error.messageString"
# A message API Gateway would have to escape: quotes, a backslash, a newline, non-ASCII, the placeholder itself.
AWKWARD = 'say "no" \\ to\nthis, \u00e9t\u00e9 $context.error.messageString'
CONDITION = {"ApiKey": {"UseIam": False, "UseApiKeys": True}, "IAM": {"UseIam": True, "UseApiKeys": False}}


def written_responses(mode: AuthMode) -> dict[str, dict[str, Any]]:
    """ImageApi's GatewayResponses as template.yaml writes them, each ``!If`` on UseIam/UseApiKeys decided for ``mode``."""
    written = load_template(TEMPLATE)["Resources"]["ImageApi"]["Properties"]["GatewayResponses"]
    responses = {}
    for name, entry in written.items():
        if isinstance(entry, dict) and "Fn::If" in entry:
            condition, when_true, when_false = entry["Fn::If"]
            entry = when_true if CONDITION[mode][condition] else when_false
        if entry != {"Ref": "AWS::NoValue"}:
            responses[name] = entry
    return responses


def json_template(responses: dict[str, dict[str, Any]], response_type: str) -> str:
    return str(responses[response_type]["ResponseTemplates"]["application/json"])


def error_of(renderer: TemplateErrorBody, error: GatewayError) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(renderer(error))["error"]
    return body


@pytest.fixture(scope="module")
def renderers() -> dict[AuthMode, TemplateErrorBody]:
    return {mode: gateway_error_body(mode) for mode in AUTH_MODES}


@pytest.mark.parametrize("mode", AUTH_MODES)
def test_each_mode_renders_what_the_template_deploys(renderers: dict[AuthMode, TemplateErrorBody], mode: AuthMode) -> None:
    written = written_responses(mode)
    assert gateway_responses(mode) == written
    for response_type in written:
        error = GatewayError(403, AWKWARD, response_type=response_type)
        expected = json.loads(json_template(written, response_type).replace(MESSAGE_STRING, json.dumps(AWKWARD)))
        assert json.loads(renderers[mode](error)) == expected
        if MESSAGE_STRING in json_template(written, response_type):
            assert error_of(renderers[mode], error)["message"] == AWKWARD  # escaped, and nothing else substituted


def test_iam_missing_authentication_is_the_templates_answer_not_the_api_key_modes_404(
    renderers: dict[AuthMode, TemplateErrorBody],
) -> None:
    unsigned = GatewayError(403, "Missing Authentication Token", response_type="MISSING_AUTHENTICATION_TOKEN")
    iam = error_of(renderers["IAM"], unsigned)
    assert iam == json.loads(json_template(written_responses("IAM"), "MISSING_AUTHENTICATION_TOKEN"))["error"]
    assert iam["code"] == "missing_authentication" and "Signature Version 4" in iam["message"]
    # With keys the same type means no such route: another answer
    no_route = error_of(renderers["ApiKey"], unsigned)
    assert no_route == json.loads(json_template(written_responses("ApiKey"), "MISSING_AUTHENTICATION_TOKEN"))["error"]
    assert no_route != iam and no_route["code"] == "unknown_url"


def test_api_key_mode_keeps_its_codes(renderers: dict[AuthMode, TemplateErrorBody]) -> None:
    keys = renderers["ApiKey"]
    missing = error_of(keys, GatewayError(401, front.MISSING_KEY_MESSAGE, response_type="UNAUTHORIZED"))
    unknown = error_of(keys, GatewayError(403, front.UNKNOWN_KEY_MESSAGE, response_type="INVALID_API_KEY"))
    assert missing == {"message": front.MISSING_KEY_MESSAGE, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    assert unknown == {"message": front.UNKNOWN_KEY_MESSAGE, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    for mode in AUTH_MODES:
        throttled = error_of(renderers[mode], GatewayError(429, "Too Many Requests"))
        assert (throttled["type"], throttled["code"], throttled["message"]) == (
            "rate_limit_error",
            "rate_limit_exceeded",
            "Too Many Requests",
        )


def test_iam_mode_never_speaks_of_api_keys(renderers: dict[AuthMode, TemplateErrorBody]) -> None:
    every_type = set(written_responses("ApiKey")) | set(written_responses("IAM")) | {"SOME_OTHER_TYPE"}
    for response_type in every_type:
        for status in (401, 403, 429, 500):
            body = renderers["IAM"](GatewayError(status, "Forbidden", response_type=response_type)).decode()
            assert "API key" not in body, (response_type, body)
    # ...where the ApiKey mode does, so the check above could fail
    assert "API key" in renderers["ApiKey"](GatewayError(401, "Unauthorized", response_type="UNAUTHORIZED")).decode()


@pytest.mark.parametrize("mode", AUTH_MODES)
def test_other_errors_fall_back_to_the_default_responses(renderers: dict[AuthMode, TemplateErrorBody], mode: AuthMode) -> None:
    renderer = renderers[mode]
    too_long = {"message": "Request Too Long", "type": "invalid_request_error", "param": None, "code": None}
    assert error_of(renderer, GatewayError(413, "Request Too Long")) == too_long
    assert error_of(renderer, GatewayError(403, "Request Too Long", response_type="WAF_FILTERED")) == too_long  # not in the template
    timed_out = error_of(renderer, GatewayError(504, "Endpoint request timed out"))
    assert (timed_out["type"], timed_out["code"], timed_out["message"]) == ("api_error", None, "Endpoint request timed out")


def test_without_a_json_template_api_gateway_answers_its_own_shape() -> None:
    renderer = TemplateErrorBody({"THROTTLED": {"StatusCode": "429"}})
    assert renderer(GatewayError(429, AWKWARD)) == aws_error_body(GatewayError(429, AWKWARD))
    assert json.loads(renderer(GatewayError(400, AWKWARD))) == {"message": AWKWARD}


def test_a_template_that_does_not_render_to_json_fails_when_loaded() -> None:
    with pytest.raises(json.JSONDecodeError):
        TemplateErrorBody({"DEFAULT_4XX": {"ResponseTemplates": {"application/json": '{"message": "$context.error.messageString"}'}}})


# What the front answers with, per response type, read from its source: the template's StatusCode must agree.


# Parsed when pytest collects this module, before any test runs: CPython 3.11's ast.parse can raise "AST constructor
# recursion depth mismatch" later in a process that has hit its recursion limit (python/cpython#106905), which the
# fuzz tests' deeply nested bodies do on purpose.
_TREES = {module: ast.parse(Path(inspect.getfile(module)).read_text()) for module in (front, sigv4)}


def _calls(module: Any, name: str) -> list[ast.Call]:
    tree = _TREES[module]
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name]


def _signature_error_types() -> set[str]:
    """Every response type devtools/sigv4.py refuses a request with (SignatureError's second argument, or its default)."""
    default = inspect.signature(sigv4.SignatureError).parameters["response_type"].default
    found = set()
    for call in _calls(sigv4, "SignatureError"):
        given = call.args[1] if len(call.args) > 1 else next((kw.value for kw in call.keywords if kw.arg == "response_type"), None)
        if given is None:
            found.add(default)
        elif isinstance(given, ast.Name):
            found.add(getattr(sigv4, given.id))
        else:
            assert isinstance(given, ast.Constant), ast.unparse(call)
            found.add(given.value)
    return found


def front_answers() -> set[tuple[AuthMode, str, int]]:
    """(auth mode, response type, status) of every GatewayError devtools/front.py raises. A SignatureError's types
    (``response_type=error.response_type``) are the IAM mode's; the front's own typed refusals the key path's
    (ApiKey); untyped errors (GatewayError's default type) happen in both modes."""
    answers: set[tuple[AuthMode, str, int]] = set()
    for call in _calls(front, "GatewayError"):
        status = call.args[0]
        assert isinstance(status, ast.Constant) and isinstance(status.value, int), f"status is not a literal: {ast.unparse(call)}"
        given = next((kw.value for kw in call.keywords if kw.arg == "response_type"), None)
        if given is None:
            answers |= {(mode, GatewayError(status.value, "").response_type, status.value) for mode in AUTH_MODES}
        elif isinstance(given, ast.Constant):
            answers.add(("ApiKey", given.value, status.value))
        else:
            assert ast.unparse(given) == "error.response_type", ast.unparse(call)
            answers |= {("IAM", response_type, status.value) for response_type in _signature_error_types()}
    return answers


def test_the_template_answers_each_front_refusal_with_the_fronts_status() -> None:
    answers = front_answers()
    # The scan sees what the front is known to raise (it cannot pass by finding nothing)
    assert {
        ("ApiKey", "UNAUTHORIZED", 401),
        ("ApiKey", "INVALID_API_KEY", 403),
        ("IAM", "MISSING_AUTHENTICATION_TOKEN", 403),
        ("IAM", "INVALID_SIGNATURE", 403),
        ("ApiKey", "REQUEST_TOO_LARGE", 413),
        ("IAM", "DEFAULT_5XX", 504),
    } <= answers
    for mode, response_type, status in sorted(answers):
        response = gateway_responses(mode).get(response_type, {})
        if "StatusCode" in response:
            assert response["StatusCode"] == str(status), (mode, response_type, status)


# The stack: its mode's renderer, read from the template once, unless the caller brings its own.


def test_the_stack_renders_for_its_auth_mode_unless_given_a_renderer(tmp_path: Path) -> None:
    unsigned = GatewayError(403, "Missing Authentication Token", response_type="MISSING_AUTHENTICATION_TOKEN")
    iam = LocalStack(data_dir=tmp_path, port=0, s3_port=0, auth_mode="IAM", iam_credentials={"AKIDONE": "s"})
    keys = LocalStack(data_dir=tmp_path, port=0, s3_port=0, api_keys=["k" * 24])
    assert json.loads(iam.front.error_body(unsigned))["error"]["code"] == "missing_authentication"
    assert json.loads(keys.front.error_body(unsigned))["error"]["code"] == "unknown_url"
    assert json.loads(keys.front.error_body(GatewayError(401, "x", response_type="UNAUTHORIZED")))["error"]["code"] == "invalid_api_key"
    own = LocalStack(data_dir=tmp_path, port=0, s3_port=0, auth_mode="IAM", iam_credentials={"AKIDONE": "s"}, error_body=aws_error_body)
    assert own.front.error_body is aws_error_body


def test_the_stack_reads_the_template_it_is_given_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edited = tmp_path / "template.yaml"
    edited.write_text(TEMPLATE.read_text().replace("Incorrect API key provided.", "No such key here."))
    loads: list[Path] = []
    real_load = local.load_template
    monkeypatch.setattr(local, "load_template", lambda path: loads.append(path) or real_load(path))
    stack = LocalStack(data_dir=tmp_path, port=0, s3_port=0, api_keys=["k" * 24], template=edited)
    for _ in range(3):
        body = json.loads(stack.front.error_body(GatewayError(403, front.UNKNOWN_KEY_MESSAGE, response_type="INVALID_API_KEY")))
        assert body["error"]["message"] == "No such key here."
    assert loads == [edited]


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
