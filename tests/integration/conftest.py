"""Integration tier: the handler in-process, against the real S3 server (SeaweedFS on loopback, started once per
session) and a fake OpenAI server speaking real HTTP on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.aws_local import JobResources, MotoServer, create_job_resources, create_usage_table
from devtools.poller import SqsPoller
from devtools.s3server import S3Server
from tests.fakes.bedrock_server import FakeBedrock
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.s3_fault_proxy import S3FaultProxy


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(
        tmp_path_factory.mktemp("s3"),
        bucket=f"imagegen-it-{secrets.token_hex(4)}",
        access_key=f"it-{secrets.token_hex(4)}",
        secret_key=secrets.token_urlsafe(24),
    )
    with server:
        yield server


@pytest.fixture
def local_s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point the code under test at the S3 server, the way a deployment's environment would."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IMAGES_BUCKET", s3_server.bucket)
    return s3_server


@pytest.fixture(scope="module")
def s3_proxy(s3_server: S3Server) -> Iterator[S3FaultProxy]:
    """A fault-injecting proxy in front of the S3 server (tests point AWS_ENDPOINT_URL_S3 at it), one per module."""
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def s3(s3_server: S3Server):
    return s3_server.client()


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="session")
def fake_bedrock(s3_server: S3Server) -> Iterator[FakeBedrock]:
    """Checks SigV4 signatures with the credentials the tests' environment gives boto3 (the S3 server's)."""
    with FakeBedrock(credentials=(s3_server.access_key, s3_server.secret_key)) as server:
        yield server


@pytest.fixture
def bedrock_env(local_s3: S3Server, fake_bedrock: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> FakeBedrock:
    """Bedrock enabled, and boto3's bedrock-runtime endpoint at the fake (as AWS_ENDPOINT_URL_S3 does for S3)."""
    monkeypatch.setenv("BEDROCK_ENABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake_bedrock.endpoint)
    fake_bedrock.reset()
    return fake_bedrock


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def job_resources(local_s3: S3Server, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> JobResources:
    """A fresh queue, dead-letter queue and jobs table per test, and the environment pointing at them."""
    resources = create_job_resources(
        moto_server.client("sqs"), moto_server.client("dynamodb"), prefix=f"it-{secrets.token_hex(4)}", visibility_timeout=1
    )
    for name, value in {**moto_server.env(), **resources.env(), "MAX_RECEIVE_COUNT": "3"}.items():
        monkeypatch.setenv(name, value)
    return resources


@pytest.fixture
def usage_table(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh usage table per test (moto's DynamoDB, the schema of template.yaml's UsageTable), USAGE_TABLE naming it."""
    name = create_usage_table(moto_server.client("dynamodb"), f"it-usage-{secrets.token_hex(4)}")
    for key, value in {**moto_server.env(), "USAGE_TABLE": name}.items():
        monkeypatch.setenv(key, value)
    return name


@pytest.fixture
def openai_env(local_s3: S3Server, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The OpenAI models served from the fake OpenAI server, its request log emptied."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-integration-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    fake_openai.requests.clear()
    return fake_openai


@pytest.fixture
def worker_poller(job_resources: JobResources, moto_server: MotoServer, lambda_context: Any) -> SqsPoller:
    """The local event source mapping of the jobs queue, invoking the worker handler in-process."""
    from functions.worker import app as worker

    return SqsPoller(
        moto_server.client("sqs"),
        job_resources.queue_url,
        job_resources.queue_arn,
        lambda event: worker.lambda_handler(event, lambda_context),
        region="us-east-1",
        batch_size=10,
    )
