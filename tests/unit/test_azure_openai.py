"""Azure OpenAI: the endpoint style (URL, header, body without model), the azure/<id> models and config validation."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from imagegen.options import ImageGenerationRequest
from imagegen.providers.openai import azure_endpoint, build_request_body, openai_endpoint
from imagegen.registry import build_registry
from imagegen.settings import AZURE_OPENAI_DEFAULT_API_VERSION, Settings
from imagegen.specs import azure_models

REGISTRY = build_registry(openai_enabled=False, default_model=None, azure_deployments={"dall-e-3": "my dalle/3", "gpt-image-1": "img"})


def plan(**fields: object):
    return REGISTRY.plan(ImageGenerationRequest.model_validate({"prompt": "a cat", **fields}))


def test_azure_url_header_and_body() -> None:
    style = azure_endpoint("https://res.openai.azure.com/", "2024-10-21")
    dalle = plan(model="azure/dall-e-3")
    assert style.url(dalle) == "https://res.openai.azure.com/openai/deployments/my%20dalle%2F3/images/generations?api-version=2024-10-21"
    assert style.auth_headers("k") == {"api-key": "k"}
    assert "model" not in build_request_body(dalle, send_model=style.send_model)


def test_openai_style_is_unchanged() -> None:
    style = openai_endpoint("https://api.openai.com/v1/")
    assert style.url(plan(model="azure/dall-e-3")) == "https://api.openai.com/v1/images/generations"
    assert style.auth_headers("sk-x") == {"Authorization": "Bearer sk-x"}
    assert style.send_model


def test_azure_models_keep_openai_limits_under_their_own_ids() -> None:
    dalle, gpt = azure_models({"dall-e-3": "d3", "gpt-image-1": "img"})
    assert (dalle.id, dalle.provider, dalle.provider_model, dalle.max_n) == ("azure/dall-e-3", "azure", "d3", 1)
    assert gpt.id == "azure/gpt-image-1" and gpt.response_formats == ("url", "b64_json")
    assert REGISTRY.default_model == "azure/dall-e-3"
    both = build_registry(openai_enabled=True, default_model=None, azure_deployments={"dall-e-3": "d3"})
    assert {"gpt-image-1.5", "azure/dall-e-3"} <= {spec.id for spec in both.models}


def settings(**env: str) -> Settings:
    return Settings.model_validate({"IMAGES_BUCKET": "bucket", **env})


AZURE = {
    "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
    "AZURE_OPENAI_API_KEY": "key",
    "AZURE_OPENAI_DEPLOYMENTS": json.dumps({"dall-e-3": "d3"}),
}


def test_valid_configuration() -> None:
    got = settings(**AZURE)
    assert got.azure_enabled and got.azure_openai_api_version == AZURE_OPENAI_DEFAULT_API_VERSION
    assert not settings().azure_enabled
    assert settings(**{**AZURE, "AZURE_OPENAI_API_KEY": "", "AZURE_OPENAI_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:x"}).azure_enabled


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"AZURE_OPENAI_DEPLOYMENTS": json.dumps({"dall-e-9": "x"})}, "unknown models"),
        ({"AZURE_OPENAI_DEPLOYMENTS": json.dumps({"dall-e-3": " "})}, "empty deployment names"),
        ({"AZURE_OPENAI_DEPLOYMENTS": "{}"}, "AZURE_OPENAI_DEPLOYMENTS is empty"),
        ({"AZURE_OPENAI_DEPLOYMENTS": "not json"}, "AZURE_OPENAI_DEPLOYMENTS"),
        ({"AZURE_OPENAI_ENDPOINT": ""}, "AZURE_OPENAI_ENDPOINT is not"),
        ({"AZURE_OPENAI_ENDPOINT": "http://res.openai.azure.com"}, "https"),
        ({"AZURE_OPENAI_API_KEY": ""}, "AZURE_OPENAI_API_KEY or"),
        ({"AZURE_OPENAI_API_VERSION": "2024-10-21&x=1"}, "AZURE_OPENAI_API_VERSION"),
    ],
)
def test_misconfiguration_fails_at_cold_start(override: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        settings(**{**AZURE, **override})
