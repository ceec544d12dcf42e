"""``GET /v1/models``: OpenAI's list shape, plus what each model accepts (so clients can build forms from it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from imagegen.registry import ModelRegistry
from imagegen.specs import InputRule, ModelSpec


class InputCapabilities(BaseModel):
    """What ``POST /v1/images/edits`` or ``/v1/images/variations`` takes for a model."""

    max_images: int
    formats: list[str]
    max_image_bytes: int
    mask: bool
    markup: bool
    input_fidelities: list[str]

    @classmethod
    def of(cls, rule: InputRule | None) -> InputCapabilities | None:
        if rule is None:
            return None
        return cls(
            max_images=rule.max_images,
            formats=list(rule.formats),
            max_image_bytes=rule.max_image_bytes,
            mask=rule.mask,
            markup=rule.markup,
            input_fidelities=list(rule.input_fidelities),
        )


class ModelCapabilities(BaseModel):
    title: str
    sizes: list[str]
    custom_sizes: str | None
    default_size: str
    max_n: int
    max_prompt_chars: int
    qualities: list[str]
    styles: list[str]
    response_formats: list[str]
    default_response_format: str
    output_formats: list[str]
    complexities: list[str]
    backgrounds: list[str]
    # None: the model does not edit / make variations.
    edits: InputCapabilities | None
    variations: InputCapabilities | None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    default: bool
    capabilities: ModelCapabilities


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def _card(spec: ModelSpec, default_model: str) -> ModelCard:
    return ModelCard(
        id=spec.id,
        owned_by=spec.provider,
        default=spec.id == default_model,
        capabilities=ModelCapabilities(
            title=spec.title or spec.id,
            sizes=list(spec.sizes),
            custom_sizes=spec.custom_sizes.describe() if spec.custom_sizes else None,
            default_size=spec.default_size,
            max_n=spec.max_n,
            max_prompt_chars=spec.max_prompt_chars,
            qualities=list(spec.qualities),
            styles=list(spec.styles),
            response_formats=list(spec.response_formats),
            default_response_format=spec.default_response_format,
            output_formats=list(spec.output_formats) or [spec.native_format],
            complexities=list(spec.complexities),
            backgrounds=list(spec.backgrounds),
            edits=InputCapabilities.of(spec.edits),
            variations=InputCapabilities.of(spec.variations),
        ),
    )


def list_models(registry: ModelRegistry) -> ModelList:
    return ModelList(data=[_card(spec, registry.default_model) for spec in registry.models])
