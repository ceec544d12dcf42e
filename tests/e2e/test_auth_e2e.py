"""API keys through the local stack, as the deployed gateway answers: no key 401, unknown key 403, public routes
open; the official SDK's api_key (sent as a Bearer token) is all a client needs."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from devtools.local import LocalStack
from tests.e2e.conftest import own_stack

pytestmark = pytest.mark.e2e

KEY = "sk-imagegen-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = own_stack(tmp_path_factory, "keyed", workers=1, async_jobs=False, api_keys=[KEY])
    with stack:
        yield stack


def generate(stack: LocalStack, headers: dict[str, str]) -> httpx.Response:
    body = {"prompt": "a red fox", "model": "local", "size": "256x256"}
    return httpx.post(f"{stack.base_url}/v1/images/generations", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer"}, 401), ({"x-api-key": KEY}, 401), ({"Authorization": "Bearer " + "x" * 32}, 403)],
)
def test_without_the_key_the_function_is_never_reached(keyed_stack, headers, status) -> None:
    response = generate(keyed_stack, headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "x-amzn-RequestId" in response.headers


def test_the_key_as_a_bearer_token_works(keyed_stack) -> None:
    assert generate(keyed_stack, {"Authorization": f"Bearer {KEY}"}).status_code == 200


@pytest.mark.parametrize("path", ["/", "/health", "/openapi.json", "/docs"])
def test_public_routes_need_no_key(keyed_stack, path) -> None:
    assert httpx.get(f"{keyed_stack.base_url}{path}", timeout=30).status_code == 200


def test_models_need_the_key(keyed_stack) -> None:
    assert httpx.get(f"{keyed_stack.base_url}/v1/models", timeout=30).status_code == 401


def test_official_sdk_with_api_key(keyed_stack) -> None:
    from openai import AuthenticationError, OpenAI, PermissionDeniedError

    client = OpenAI(base_url=f"{keyed_stack.base_url}/v1", api_key=KEY, max_retries=0)
    assert client.images.generate(model="local", prompt="a fox", size="256x256").data[0].url
    with pytest.raises(PermissionDeniedError):
        OpenAI(base_url=f"{keyed_stack.base_url}/v1", api_key="sk-wrong-" + "0" * 24, max_retries=0).models.list()
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{keyed_stack.base_url}/v1", api_key="short", max_retries=0).models.list()
