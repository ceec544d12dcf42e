"""The local stack's machinery: the front's API Gateway behaviour (event shape, binary bodies, limits, error
mapping) against a throwaway echo function under the real RIE, plus smoke checks of the real stack."""

from __future__ import annotations

import base64
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore.exceptions
import httpx
import pytest
from botocore.config import Config

from devtools.front import ApiGatewayFront
from devtools.local import LocalStack
from devtools.procs import StartupError, session_members
from devtools.rie import FunctionConfig, FunctionPool, RieProcess

pytestmark = pytest.mark.e2e

ECHO_APP = """
import base64, json, os, time


def lambda_handler(event, context):
    path = event["path"]
    if path == "/crash":
        raise ValueError("boom")
    if path == "/exit":
        os._exit(3)
    if path == "/sleep":
        time.sleep(float(event["queryStringParameters"]["s"]))
    if path == "/malformed":
        return {"statusCode": 200, "body": "x", "unexpected": True}
    if path == "/binary":
        return {
            "statusCode": 201,
            "headers": {"Content-Type": "application/octet-stream", "X-One": "a"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-One": ["a"]},
            "body": base64.b64encode(bytes(range(256))).decode(),
            "isBase64Encoded": True,
        }
    seen = {"event": event, "pid": os.getpid(), "cwd": os.getcwd(), "remaining_ms": context.get_remaining_time_in_millis(),
            "env": {k: os.environ.get(k) for k in ("AWS_LAMBDA_FUNCTION_NAME", "ECHO_MARK", "HOME", "AWS_CONFIG_FILE")}}
    return {"statusCode": 200, "body": json.dumps(seen)}
"""

FRONT_TIMEOUT = 2.0


def alive(pgids: list[int]) -> list[int]:
    return [pid for sid in pgids for pid in session_members(sid)]


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiGatewayFront]:
    """The echo function (2 RIE processes, 5 s Lambda timeout) behind a front with a 2 s integration timeout."""
    root = tmp_path_factory.mktemp("echo")
    code_dir = root / "function"
    code_dir.mkdir()
    (code_dir / "app.py").write_text(ECHO_APP)
    config = FunctionConfig(code_dir=code_dir, name="echo", timeout=5, env={"ECHO_MARK": "set"})
    pool = FunctionPool(lambda i: RieProcess(config, log_path=root / f"echo-{i}.log"), size=2)
    front = ApiGatewayFront(pool.invoke, port=0, timeout=FRONT_TIMEOUT, log_path=root / "front.log")
    with pool, front:
        yield front
    assert not alive([pid for pid in (w.pid for w in pool.workers) if pid]), "RIE processes survived stop()"


def echoed(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_event_has_the_api_gateway_rest_proxy_shape(echo: ApiGatewayFront) -> None:
    response = httpx.post(
        f"{echo.base_url}/v1/things?b=1&b=2&empty=",
        content=b'{"x": "\xc3\xa9"}',
        headers=[("Content-Type", "application/json"), ("X-Multi", "one"), ("X-Multi", "two")],
    )
    seen = echoed(response)
    event = seen["event"]
    assert set(event) == {
        "resource", "path", "httpMethod", "headers", "multiValueHeaders", "queryStringParameters",
        "multiValueQueryStringParameters", "pathParameters", "stageVariables", "requestContext", "body", "isBase64Encoded",
    }  # fmt: skip
    assert (event["resource"], event["path"], event["httpMethod"]) == ("/v1/things", "/v1/things", "POST")
    assert event["body"] == '{"x": "é"}' and event["isBase64Encoded"] is False
    assert event["queryStringParameters"] == {"b": "2", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"b": ["1", "2"], "empty": [""]}
    assert event["headers"]["X-Multi"] == "two" and event["multiValueHeaders"]["X-Multi"] == ["one", "two"]
    assert event["headers"]["X-Forwarded-Proto"] == "http" and event["headers"]["X-Forwarded-Port"] == str(echo.port)
    assert event["pathParameters"] is None and event["stageVariables"] is None
    context = event["requestContext"]
    assert {"accountId", "apiId", "resourceId", "stage", "requestId", "requestTimeEpoch", "identity", "path",
            "resourcePath", "httpMethod", "protocol", "domainName"} <= set(context)  # fmt: skip
    assert uuid.UUID(context["requestId"]) and response.headers["x-amzn-RequestId"] == context["requestId"]
    assert (context["stage"], context["path"], context["resourcePath"]) == ("prod", "/v1/things", "/v1/things")
    assert context["identity"]["sourceIp"] == "127.0.0.1" and context["identity"]["userAgent"].startswith("python-httpx")
    assert abs(context["requestTimeEpoch"] / 1000 - time.time()) < 60
    assert context["domainName"] == f"127.0.0.1:{echo.port}" and context["protocol"] == "HTTP/1.1"


def test_get_without_body_has_null_body_and_query(echo: ApiGatewayFront) -> None:
    event = echoed(httpx.get(f"{echo.base_url}/health"))["event"]
    assert event["body"] is None and event["isBase64Encoded"] is False
    assert event["queryStringParameters"] is None and event["multiValueQueryStringParameters"] is None


def test_non_utf8_body_arrives_base64_encoded(echo: ApiGatewayFront) -> None:
    raw = b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary"
    event = echoed(httpx.post(f"{echo.base_url}/upload", content=raw, headers={"Content-Type": "image/png"}))["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw


def test_chunked_body_is_read_whole(echo: ApiGatewayFront) -> None:
    event = echoed(httpx.post(f"{echo.base_url}/chunks", content=iter([b"ab", b"cd" * 5000])))["event"]
    assert event["body"] == "ab" + "cd" * 5000


def test_function_runs_like_lambda(echo: ApiGatewayFront) -> None:
    seen = echoed(httpx.get(f"{echo.base_url}/env"))
    code_dir = Path(seen["cwd"])
    assert (code_dir / "app.py").is_file()
    assert seen["env"] == {"AWS_LAMBDA_FUNCTION_NAME": "echo", "ECHO_MARK": "set", "HOME": None, "AWS_CONFIG_FILE": os.devnull}
    assert 0 < seen["remaining_ms"] <= 5000


def test_base64_answer_is_decoded_and_headers_merged(echo: ApiGatewayFront) -> None:
    response = httpx.get(f"{echo.base_url}/binary")
    assert response.status_code == 201
    assert response.content == bytes(range(256))
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers.get_list("x-one") == ["a"]


def test_answer_without_content_type_defaults_to_json(echo: ApiGatewayFront) -> None:
    assert httpx.get(f"{echo.base_url}/x").headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/crash", "/malformed", "/exit"])
def test_crash_or_malformed_answer_is_502(echo: ApiGatewayFront, path: str) -> None:
    response = httpx.get(f"{echo.base_url}{path}")
    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}
    assert echoed(httpx.get(f"{echo.base_url}/after")), "the pool must recover"


def test_slow_function_is_504_and_the_pool_recovers(echo: ApiGatewayFront) -> None:
    started = time.monotonic()
    response = httpx.get(f"{echo.base_url}/sleep?s=4", timeout=30)
    assert response.status_code == 504
    assert response.json() == {"message": "Endpoint request timed out"}
    assert FRONT_TIMEOUT <= time.monotonic() - started < FRONT_TIMEOUT + 3
    for _ in range(3):  # every instance answers again, none is still busy with the abandoned call
        assert echoed(httpx.get(f"{echo.base_url}/after"))


def test_request_over_10_mb_is_413(echo: ApiGatewayFront) -> None:
    response = httpx.post(f"{echo.base_url}/upload", content=b"x" * (10 * 1024 * 1024 + 1), timeout=30)
    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Long"}


def test_concurrent_requests_never_share_an_rie(echo: ApiGatewayFront) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: httpx.get(f"{echo.base_url}/sleep?s=0.3", timeout=30), range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert len({r.json()["pid"] for r in responses}) <= 2


def processes_under(path: Path) -> list[str]:
    """Live processes whose command line or working directory mention ``path``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            where = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or where.startswith(str(path)):
            found.append(cmdline)
    return found


def test_a_function_that_cannot_start_fails_start_with_its_log(tmp_path: Path) -> None:
    (tmp_path / "functions" / "api").mkdir(parents=True)
    (tmp_path / "functions" / "api" / "app.py").write_text("import no_such_module\n")
    stack = LocalStack(root=tmp_path, port=0, s3_port=0, workers=1, passthrough=())
    with pytest.raises(StartupError) as failed:
        stack.start()
    message = str(failed.value)
    assert "Runtime.ImportModuleError" in message and "no_such_module" in message and "api-0.log" in message
    assert processes_under(tmp_path) == []


# The real stack (functions/api behind the front), or a deployment with E2E_BASE_URL.


def test_health_is_200(local_stack) -> None:
    response = httpx.get(f"{local_stack.base_url}/health", timeout=30)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_unknown_route_is_the_functions_404(local_stack) -> None:
    response = httpx.get(f"{local_stack.base_url}/no/such/route", timeout=30)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_s3_server_enforces_sigv4(local_stack, s3) -> None:
    s3.put_object(Bucket=local_stack.bucket, Key="smoke/object.txt", Body=b"hello")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": local_stack.bucket, "Key": "smoke/object.txt"})
    assert httpx.get(url).content == b"hello"
    assert httpx.get(url.replace("object.txt", "other.txt")).status_code == 403
    assert httpx.get(f"{local_stack.s3_endpoint_url}/{local_stack.bucket}/smoke/object.txt").status_code == 403
    wrong = boto3.client(
        "s3",
        endpoint_url=local_stack.s3_endpoint_url,
        region_name=local_stack.region,
        aws_access_key_id=local_stack.s3.access_key,
        aws_secret_access_key="not-the-secret",
        config=Config(signature_version="s3v4"),
    )
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        wrong.get_object(Bucket=local_stack.bucket, Key="smoke/object.txt")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_a_second_stack_runs_alongside_and_leaves_no_process(local_stack, tmp_path: Path) -> None:
    if not isinstance(local_stack, LocalStack):
        pytest.skip("needs the local stack")
    other = LocalStack(data_dir=tmp_path, port=0, s3_port=0, workers=1, passthrough=(), secret_key=secrets.token_hex(8))
    with other:
        groups = other.process_groups()
        assert len(groups) == 5 and alive(groups)  # weed, moto, the API RIE, the worker RIE, the S3-trigger RIE
        assert other.base_url != local_stack.base_url and other.s3_endpoint_url != local_stack.s3_endpoint_url
        for stack in (other, local_stack):
            assert httpx.get(f"{stack.base_url}/health", timeout=30).status_code == 200
    assert alive(groups) == []
    assert httpx.get(f"{local_stack.base_url}/health", timeout=30).status_code == 200
