"""End-to-end fixtures: the local stack (S3 server + Lambda RIE + API front) on free ports for the session,
or, with ``E2E_BASE_URL`` set, a deployed API (e.g. the stack's ``ApiUrl`` output) and nothing started.

The session's stack is ``make local``'s: the API function under its streaming runtime (``stream_api``), so every
non-streamed request of the e2e tier also proves that answers framed for a STREAM route are the same answers.
``E2E_STREAM_API=0`` runs the tier against the buffered API instead (the template's default; the auth, fuzz and
smoke tests start their own buffered stacks either way)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from devtools.local import LocalStack

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class DeployedStack:
    """A deployment under test: only its URL is known."""

    base_url: str
    s3_endpoint_url: str | None = None
    bucket: str | None = None


def deployed_url() -> str | None:
    url = os.environ.get("E2E_BASE_URL", "").strip()
    return url.rstrip("/") or None


def own_stack(tmp_path_factory: pytest.TempPathFactory, name: str, **options: Any) -> LocalStack:
    """A local stack of a test's own, not started: free ports, data under a fresh temporary directory ``name``, and
    none of the developer's settings passed through (never their OPENAI_API_KEY: tests run against the stack's own
    providers); ``options`` as LocalStack takes them."""
    return LocalStack(data_dir=tmp_path_factory.mktemp(name), port=0, s3_port=0, passthrough=(), **options)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack | DeployedStack]:
    """The API under test, as ``.base_url`` (no trailing slash)."""
    url = deployed_url()
    if url is not None:
        yield DeployedStack(base_url=url)
        return
    stack = own_stack(
        tmp_path_factory,
        "local-stack",
        access_key=f"e2e-{secrets.token_hex(4)}",
        secret_key=secrets.token_urlsafe(24),
        stream_api=os.environ.get("E2E_STREAM_API", "1") != "0",
    )
    with stack:
        yield stack


@pytest.fixture(scope="session")
def s3(local_stack: LocalStack | DeployedStack) -> S3Client:
    """A boto3 client for the local stack's S3 server (skips against a deployment)."""
    if not isinstance(local_stack, LocalStack):
        pytest.skip("no direct S3 access to a deployed stack")
    return local_stack.s3_client()
