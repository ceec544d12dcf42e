"""SDK clients, created once per container and reused (keep-alive, no per-request set-up)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
import botocore.session
import httpx
from botocore.config import Config
from pydantic import SecretStr

from imagegen.settings import get_settings
from imagegen.storage import MAX_WORKERS

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


# Timeouts and retry budgets of the S3, DynamoDB and SQS calls. They must fit in what a synchronous request has
# left: API Gateway's 29 s, of which settings.response_margin_seconds (2.5 s by default) is kept for storing and
# answering after the provider. Per attempt: a connect timeout, and a read timeout (the longest silence between two
# socket reads or writes, not a bound on a whole upload: ImageStore.put_all bounds the writes by the request's
# deadline). S3's guidance for small objects is to retry a GET or PUT that has not answered after 2 s; DynamoDB
# answers in milliseconds, so 1 s of silence is a stall. "standard" retries back off up to 1 s, then 2 s.
# Worst case of one call (every attempt stalled): S3 3 x (1 + 2) + 3 = 12 s; DynamoDB and SQS 2 x (1 + 1) + 1 = 5 s.
S3_TIMEOUTS = Config(connect_timeout=1.0, read_timeout=2.0, retries={"mode": "standard", "total_max_attempts": 3})
DYNAMODB_TIMEOUTS = Config(connect_timeout=1.0, read_timeout=1.0, retries={"mode": "standard", "total_max_attempts": 2})
SQS_TIMEOUTS = DYNAMODB_TIMEOUTS
# Presigned URLs name the bucket's regional virtual host, https://<bucket>.s3.<region>.amazonaws.com/<key>, in every
# region: without "virtual", botocore signs the global host <bucket>.s3.amazonaws.com, which a bucket created less
# than a day ago answers with a redirect and regions launched after March 2019 (ap-east-1, me-central-1, ...) refuse;
# without "us_east_1_regional_endpoint", us-east-1 gets the global host too. SigV4: the only signature S3 takes in
# every region, and the credential scope names the bucket's region (the function's: the template keeps them together).
S3_REGIONAL = Config(s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"})
# A configured endpoint (AWS_ENDPOINT_URL_S3) on an IP address or localhost is a local S3 server: path style there,
# as botocore does by default for any configured endpoint (no wildcard DNS needed on loopback).
S3_LOCAL = Config(s3={"addressing_style": "path"})


@lru_cache(maxsize=1)
def s3_client() -> S3Client:
    """The function's own region, SigV4, regional virtual-hosted URLs; bounded timeouts and standard retries.
    The endpoint comes from boto3's environment (``AWS_ENDPOINT_URL_S3`` points local runs at loopback)."""
    session = _session()
    if _is_local_endpoint(_s3_endpoint_from_environment()):
        return session.client("s3", config=_s3_config(S3_LOCAL))  # one client, not a second one made to find out
    client = session.client("s3", config=_s3_config(S3_REGIONAL))
    if _is_local_endpoint(client.meta.endpoint_url):  # a local endpoint from the shared config file
        client = session.client("s3", config=_s3_config(S3_LOCAL))
    return client


def _s3_config(addressing: Config) -> Config:
    # One connection for each thread ImageStore writes with: a thread beyond the pool would open and drop its own.
    return S3_TIMEOUTS.merge(Config(signature_version="s3v4", max_pool_connections=MAX_WORKERS)).merge(addressing)


def _s3_endpoint_from_environment() -> str:
    """The S3 endpoint boto3 takes from the environment ("" when none), as botocore resolves it."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return ""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""


def _is_local_endpoint(endpoint_url: str) -> bool:
    host = urlsplit(endpoint_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1)
def dynamodb_client() -> DynamoDBClient:
    """The jobs and idempotency tables: bounded timeouts, one retry (DYNAMODB_TIMEOUTS)."""
    return _session().client("dynamodb", config=DYNAMODB_TIMEOUTS)


@lru_cache(maxsize=1)
def sqs_client() -> SQSClient:
    """The jobs queue (send, and the worker's visibility changes): bounded like DynamoDB (SQS_TIMEOUTS)."""
    return _session().client("sqs", config=SQS_TIMEOUTS)


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


def keyed_provider_api_key(provider: str) -> Callable[[], str]:
    """The key of a provider served over httpx with a key of its own (``google``, ``bfl``, ``stability``): read on each
    call, from ``<PROVIDER>_API_KEY`` locally or its Secrets Manager secret (cached, so a rotated key is picked up
    within SECRET_MAX_AGE_SECONDS)."""
    variable = f"{provider.upper()}_API_KEY"

    def key() -> str:
        settings = get_settings()
        value: SecretStr | None = getattr(settings, f"{provider}_api_key")
        return _provider_key(value, getattr(settings, f"{provider}_api_key_secret_arn"), f"{variable} or {variable}_SECRET_ARN")

    return key


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
