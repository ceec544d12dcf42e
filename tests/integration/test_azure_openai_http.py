"""Azure OpenAI through the same OpenAI provider over real HTTP: the fake server's Azure path, through the API handler."""

from __future__ import annotations

import base64
import io
import json
from urllib.parse import urlsplit

import pytest
from PIL import Image as PILImage

from functions.api import app
from tests.conftest import load_event

pytestmark = pytest.mark.integration


@pytest.fixture
def azure_env(local_s3, fake_openai, monkeypatch):
    endpoint = fake_openai.base_url.removesuffix("/v1")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", endpoint)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-test-integration-key")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENTS", json.dumps({"dall-e-3": "my-dalle3", "gpt-image-1": "img"}))
    fake_openai.requests.clear()
    return fake_openai


def invoke(lambda_context, **body):
    body = {"size": "1024x1024", **body}  # the event's 256x256 is dall-e-2's
    response = app.lambda_handler(load_event("api_generate_b64.json", **body), lambda_context)
    return response["statusCode"], json.loads(response["body"]), response


def test_b64_success_posts_to_the_deployment_with_api_key(azure_env, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, prompt="a fox", model="azure/dall-e-3", size="1024x1024", style="natural")
    assert status == 200, body
    (item,) = body["data"]
    assert PILImage.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == (1024, 1024)
    (sent,) = azure_env.requests
    assert sent["path"] == "/openai/deployments/my-dalle3/images/generations?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == "azure-test-integration-key"
    assert "Authorization" not in sent["headers"]
    assert sent["json"] == {"prompt": "a fox", "n": 1, "size": "1024x1024", "style": "natural", "response_format": "b64_json"}


def test_url_success_stores_a_real_png(azure_env, lambda_context, monkeypatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_VERSION", "2025-04-01-preview")
    status, body, _ = invoke(lambda_context, prompt="a fox", model="azure/dall-e-3", size="1024x1024", response_format="url")
    assert status == 200, body
    (item,) = body["data"]
    import httpx

    image = httpx.get(item["url"], timeout=10)
    assert image.status_code == 200
    assert PILImage.open(io.BytesIO(image.content)).size == (1024, 1024)
    assert urlsplit(azure_env.requests[0]["path"]).query == "api-version=2025-04-01-preview"


def test_gpt_image_deployment(azure_env, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, prompt="a fox", model="azure/gpt-image-1", response_format="url", n=2)
    assert status == 200, body
    assert len(body["data"]) == 2
    assert azure_env.requests[0]["path"].startswith("/openai/deployments/img/images/generations?")


@pytest.mark.parametrize(
    ("prompt", "status", "code"),
    [("fail:400", 400, "invalid_value"), ("fail:401", 502, "provider_auth_failed"), ("fail:429", 429, "rate_limit_exceeded")],
)
def test_errors_map_through_the_same_table(azure_env, lambda_context, monkeypatch, prompt, status, code) -> None:
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")
    got, body, response = invoke(lambda_context, prompt=prompt, model="azure/dall-e-3")
    assert got == status, body
    assert body["error"]["code"] == code
    if status == 429:
        assert response["multiValueHeaders"]["Retry-After"] == ["1"]


def test_models_lists_azure_ids(azure_env, lambda_context) -> None:
    response = app.lambda_handler(load_event("api_models.json"), lambda_context)
    ids = [model["id"] for model in json.loads(response["body"])["data"]]
    assert "azure/dall-e-3" in ids and "azure/gpt-image-1" in ids and "dall-e-3" not in ids
