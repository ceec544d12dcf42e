"""The per-deployment registry document: validated at cold start, and GET /v1/models lists exactly it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from imagegen import registry
from imagegen.errors import InvalidRequestError, ModelNotFoundError
from imagegen.options import ImageGenerationRequest
from imagegen.registry import build_registry
from imagegen.registry_document import RegistryDocument
from imagegen.settings import get_settings
from imagegen.specs import catalog

NOVA, CORE, SD35 = "amazon.nova-canvas-v1:0", "stability.stable-image-core-v1:1", "stability.sd3-5-large-v1:0"
DOCUMENT = {
    "models": ["local", NOVA, {"id": SD35, "max_n": 2}, {"id": CORE, "max_n": 10, "default_size": "1280x720"}],
    "default_model": NOVA,
}


def test_a_document_serves_exactly_its_models_with_their_overrides() -> None:
    reg = build_registry(openai_enabled=False, default_model=None, document=RegistryDocument.model_validate(DOCUMENT))
    assert [spec.id for spec in reg.models] == ["local", NOVA, SD35, CORE]
    assert reg.default_model == NOVA
    assert (reg.get(SD35).max_n, reg.get(CORE).max_n, reg.get(CORE).default_size) == (2, 10, "1280x720")
    assert catalog()[CORE].max_n == 4  # the catalog itself is untouched
    with pytest.raises(ModelNotFoundError):
        reg.get("stability.stable-image-ultra-v1:1")
    with pytest.raises(InvalidRequestError, match="between 1 and 2"):
        reg.plan(ImageGenerationRequest(prompt="x", model=SD35, n=3))
    assert reg.plan(ImageGenerationRequest(prompt="x", model=CORE)).size == "1280x720"


def test_default_model_is_the_environment_then_the_document_then_the_first() -> None:
    config = RegistryDocument.model_validate({"models": [CORE, NOVA]})
    assert build_registry(openai_enabled=False, default_model=None, document=config).default_model == CORE
    assert build_registry(openai_enabled=False, default_model=NOVA, document=config).default_model == NOVA


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"models": []}, "at least 1"),
        ({"models": ["dall-e-4"]}, "unknown model ids ['dall-e-4']"),
        ({"models": [NOVA, NOVA]}, "listed twice"),
        ({"models": [{"id": "dall-e-3", "max_n": 2}]}, "above the model's own limit 1"),
        ({"models": [{"id": NOVA, "max_n": 11}]}, "less than or equal to 10"),
        ({"models": [{"id": CORE, "default_size": "1792x1024"}]}, "not one of"),
        ({"models": [NOVA], "default_model": CORE}, "not among the listed models"),
        ({"models": [NOVA], "extra": 1}, "Extra inputs"),
    ],
)
def test_bad_documents_are_refused(document, problem) -> None:
    with pytest.raises(ValidationError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        RegistryDocument.model_validate(document)


def test_openai_models_in_the_document_need_a_key() -> None:
    with pytest.raises(ValueError, match="no OpenAI key"):
        build_registry(openai_enabled=False, default_model=None, document=RegistryDocument.model_validate({"models": ["dall-e-3"]}))


def test_the_document_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY", json.dumps(DOCUMENT))
    assert [spec.id for spec in registry.deployment_registry(get_settings()).models] == ["local", NOVA, SD35, CORE]


def test_a_malformed_document_fails_the_settings(monkeypatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY", '{"models": ["local",')
    with pytest.raises(ValidationError, match="MODEL_REGISTRY"):
        get_settings()


def test_the_document_comes_from_ssm(monkeypatch) -> None:
    asked = []

    def get_parameter(name: str, max_age: int) -> str:
        asked.append((name, max_age))
        return json.dumps({"models": [NOVA]})

    from aws_lambda_powertools.utilities import parameters

    monkeypatch.setattr(parameters, "get_parameter", get_parameter)
    monkeypatch.setenv("MODEL_REGISTRY_PARAMETER", "/imagegen/models")
    assert [spec.id for spec in registry.deployment_registry(get_settings()).models] == [NOVA]
    assert asked == [("/imagegen/models", registry.PARAMETER_MAX_AGE_SECONDS)]


def test_nothing_configured_keeps_the_defaults() -> None:
    assert [spec.id for spec in registry.deployment_registry(get_settings()).models] == ["local"]


def test_bedrock_models_serves_only_those(monkeypatch) -> None:
    monkeypatch.setenv("BEDROCK_MODELS", f" {CORE}, {NOVA} ")
    reg = registry.deployment_registry(get_settings())
    assert [spec.id for spec in reg.models] == ["local", CORE, NOVA]
    assert reg.default_model == CORE


def test_bedrock_models_refuses_unknown_ids(monkeypatch) -> None:
    monkeypatch.setenv("BEDROCK_MODELS", "amazon.titan-image-generator-v1")
    with pytest.raises(ValueError, match="unknown models"):
        registry.deployment_registry(get_settings())


def test_blank_bedrock_settings_mean_off(monkeypatch) -> None:
    monkeypatch.setenv("BEDROCK_MODELS", "")
    monkeypatch.setenv("BEDROCK_ENABLED", "")
    assert [spec.id for spec in registry.deployment_registry(get_settings()).models] == ["local"]


def test_bedrock_models_may_name_cross_region_inference_profiles(monkeypatch) -> None:
    """``<geo>.<model id>`` is served under that id, invoked by that id, with the base model's rules."""
    monkeypatch.setenv("BEDROCK_MODELS", f"us.{NOVA},global.{SD35},{CORE}")
    reg = registry.deployment_registry(get_settings())
    assert [spec.id for spec in reg.models] == ["local", f"us.{NOVA}", f"global.{SD35}", CORE]
    profile = reg.get(f"us.{NOVA}")
    assert (profile.provider, profile.provider_model) == ("bedrock", f"us.{NOVA}")
    assert profile.model_copy(update={"id": NOVA, "provider_model": NOVA}) == catalog()[NOVA]
    with pytest.raises(InvalidRequestError, match="1024"):
        reg.plan(ImageGenerationRequest(prompt="p" * 1025, model=f"us.{NOVA}"))
    with pytest.raises(ModelNotFoundError):
        reg.get(NOVA)  # the bare id is another model id, not served unless listed


@pytest.mark.parametrize("model_id", [f"mars.{NOVA}", "us.dall-e-3", "us.local", f"us.us.{NOVA}", f"us.{NOVA}x"])
def test_only_bedrock_models_under_a_known_geography_are_profiles(monkeypatch, model_id: str) -> None:
    monkeypatch.setenv("BEDROCK_MODELS", model_id)
    with pytest.raises(ValueError, match="unknown models"):
        registry.deployment_registry(get_settings())
    with pytest.raises(ValidationError, match="unknown model ids"):
        RegistryDocument.model_validate({"models": [model_id]})


def test_a_registry_document_may_list_inference_profiles() -> None:
    config = RegistryDocument.model_validate({"models": [{"id": f"eu.{CORE}", "max_n": 2}], "default_model": f"eu.{CORE}"})
    reg = build_registry(openai_enabled=False, default_model=None, document=config)
    assert [(spec.id, spec.provider_model, spec.max_n) for spec in reg.models] == [(f"eu.{CORE}", f"eu.{CORE}", 2)]
    assert config.providers == frozenset({"bedrock"})


# A new OpenAI snapshot the catalog does not know yet: declared in the document with its family and limits.
NEW_SNAPSHOT = {
    "id": "gpt-image-2.6-flare-2027-01-15",
    "provider": "openai",
    "family": "gpt-image",
    "sizes": ["1024x1024", "auto"],
    "max_prompt_chars": 32000,
    "qualities": {"low": "low", "high": "high"},
    "output_formats": ["png", "webp"],
    "default_response_format": "b64_json",
    "safety_identifier": True,
}


def test_a_document_declares_a_model_the_catalog_does_not_know() -> None:
    document = RegistryDocument.model_validate({"models": ["local", NEW_SNAPSHOT], "default_model": NEW_SNAPSHOT["id"]})
    reg = build_registry(openai_enabled=True, default_model=None, document=document)
    assert [spec.id for spec in reg.models] == ["local", NEW_SNAPSHOT["id"]]
    planned = reg.plan(ImageGenerationRequest(prompt="x", quality="high", output_format="webp"))
    assert (planned.model.provider_model, planned.model.provider, planned.quality) == (NEW_SNAPSHOT["id"], "openai", "high")
    with pytest.raises(InvalidRequestError, match="'low', 'high'") as caught:
        reg.plan(ImageGenerationRequest(prompt="x", quality="medium"))
    assert caught.value.param == "quality"
    assert NEW_SNAPSHOT["id"] not in catalog()  # the catalog itself is untouched


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({**NEW_SNAPSHOT, "sizes": None}, "sizes"),  # limits are required
        ({k: v for k, v in NEW_SNAPSHOT.items() if k != "max_prompt_chars"}, "max_prompt_chars"),
        ({**NEW_SNAPSHOT, "family": "midjourney"}, "family"),
        ({**NEW_SNAPSHOT, "provider": "local"}, "served by 'openai' or 'bedrock'"),
        ({**NEW_SNAPSHOT, "id": "gpt-image-2"}, "is in the catalog"),
        ({**NEW_SNAPSHOT, "output_formats": ["png", "jpeg"], "bytes_per_pixel": {"png": 3.05}}, "no worst-case bytes per pixel"),
        ({**NEW_SNAPSHOT, "backgrounds": ["transparent"]}, "must be RGBA's"),
    ],
)
def test_a_declared_model_is_validated_like_a_catalog_entry(entry, problem) -> None:
    with pytest.raises(ValidationError, match=problem):
        RegistryDocument.model_validate({"models": [entry]})


def test_a_declared_openai_model_needs_a_key() -> None:
    with pytest.raises(ValueError, match="no OpenAI key"):
        build_registry(openai_enabled=False, default_model=None, document=RegistryDocument.model_validate({"models": [NEW_SNAPSHOT]}))


def test_model_registry_env_declares_a_model(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-placeholder")
    monkeypatch.setenv("MODEL_REGISTRY", json.dumps({"models": [NEW_SNAPSHOT]}))
    get_settings.cache_clear()
    try:
        reg = registry.deployment_registry(get_settings())
    finally:
        get_settings.cache_clear()
    assert reg.default_model == NEW_SNAPSHOT["id"]
