"""SDK clients, created once per container and reused (keep-alive, no per-request set-up)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import boto3
import botocore.session
import httpx
from botocore.config import Config
from pydantic import SecretStr

from imagegen.settings import get_settings

if TYPE_CHECKING:
    from botocore.loaders import Loader
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

SECRET_MAX_AGE_SECONDS = 300


@lru_cache(maxsize=1)
def _data_loader() -> Loader:
    """botocore's data files (endpoints, partitions, service models), parsed once per container for every client."""
    loader: Loader = botocore.session.Session().get_component("data_loader")
    return loader


def _session() -> boto3.session.Session:
    """A session of its own for each client (boto3's default session caches credentials beyond these caches'
    lifetime) sharing one data loader: a second and third client cost ~40 ms instead of ~120 ms at cold start."""
    core = botocore.session.Session()
    loader = _data_loader()
    core.register_component("data_loader", loader)
    session = boto3.session.Session(botocore_session=core)
    loader.search_paths[:] = dict.fromkeys(loader.search_paths)  # boto3 appends its data directory once per session
    return session


@lru_cache(maxsize=1)
def s3_client() -> S3Client:
    """SigV4 (needed for presigned URLs outside us-east-1), the function's own region, standard retries.
    The endpoint comes from boto3's environment (``AWS_ENDPOINT_URL_S3`` points local runs at loopback)."""
    config = Config(signature_version="s3v4", retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=16)
    return _session().client("s3", config=config)


@lru_cache(maxsize=1)
def dynamodb_client() -> DynamoDBClient:
    return _session().client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 3}))


@lru_cache(maxsize=1)
def sqs_client() -> SQSClient:
    return _session().client("sqs", config=Config(retries={"mode": "standard", "max_attempts": 3}))


@lru_cache(maxsize=1)
def http_client() -> httpx.Client:
    """One keep-alive client; each call passes the timeout its deadline leaves."""
    return httpx.Client(limits=httpx.Limits(max_connections=16, max_keepalive_connections=8), follow_redirects=False)


def _provider_key(key: SecretStr | None, secret_arn: str | None, variables: str) -> str:
    """A provider key: an environment variable locally, else Secrets Manager (cached for a few minutes)."""
    if key is not None:
        return key.get_secret_value()
    if secret_arn is None:
        raise RuntimeError(f"not configured: set {variables}")
    from aws_lambda_powertools.utilities import parameters

    return str(parameters.get_secret(secret_arn, max_age=SECRET_MAX_AGE_SECONDS))


def openai_api_key() -> str:
    settings = get_settings()
    return _provider_key(settings.openai_api_key, settings.openai_api_key_secret_arn, "OPENAI_API_KEY or OPENAI_API_KEY_SECRET_ARN")


def azure_openai_api_key() -> str:
    settings = get_settings()
    return _provider_key(
        settings.azure_openai_api_key,
        settings.azure_openai_api_key_secret_arn,
        "AZURE_OPENAI_API_KEY or AZURE_OPENAI_API_KEY_SECRET_ARN",
    )


# A Bedrock image call takes seconds to a minute; the request's deadline (not the socket) bounds each call. The
# socket timeout is the longest function timeout in the template (worker, S3 trigger: 300 s), so a call abandoned
# at a deadline holds its thread and connection no longer than that.
BEDROCK_READ_TIMEOUT_SECONDS = 300.0
# Concurrent calls of one request (at most 10) plus room for calls abandoned by earlier requests.
BEDROCK_MAX_CONNECTIONS = 32


@lru_cache(maxsize=1)
def bedrock_runtime_client() -> BedrockRuntimeClient:
    """``bedrock-runtime`` for invoke_model: no retries (the deadline leaves no room; SQS redelivers async jobs),
    a pool for the concurrent calls of one request. The endpoint comes from ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``
    when set (tests point it at a fake server on loopback)."""
    config = Config(
        connect_timeout=5,
        read_timeout=BEDROCK_READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=BEDROCK_MAX_CONNECTIONS,
    )
    return _session().client("bedrock-runtime", config=config)
