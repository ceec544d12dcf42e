"""``GET /v1/models``: OpenAI's list shape, plus what each model accepts (so clients can build forms from it)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from imagegen.models import Model
from imagegen.registry import ModelRegistry
from imagegen.specs import InputRule, ModelSpec


class InputCapabilities(Model):
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


class ModelCapabilities(Model):
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
    # False: the model only edits (a generation naming it is a 400); None: it does not edit / make variations.
    generations: bool
    edits: InputCapabilities | None
    variations: InputCapabilities | None


class ModelLifecycle(Model):
    """Where the vendor's model is in its lifecycle: "active", or "legacy" (still served; new accounts may be refused,
    and from ``extended_access_on`` at higher prices) with the end of life it announced. Retired models are not
    listed (a request naming one is a 404 ``model_retired``). ``verified`` is false when the dates come from third
    parties only (such an end of life is shown, never enforced)."""

    status: Literal["active", "legacy"]
    legacy_on: dt.date | None = None
    extended_access_on: dt.date | None = None
    end_of_life_on: dt.date | None = None
    successor: str | None = None
    verified: bool = True

    @classmethod
    def of(cls, spec: ModelSpec, today: dt.date) -> ModelLifecycle:
        return cls(
            status="legacy" if spec.legacy(today) else "active",
            legacy_on=spec.legacy_on,
            extended_access_on=spec.extended_access_on,
            end_of_life_on=spec.end_of_life_on,
            successor=spec.successor,
            verified=not spec.lifecycle_unverified,
        )


class ModelCard(Model):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    default: bool
    capabilities: ModelCapabilities
    # A route (owned_by "route"): its models, in the order they are tried.
    route: list[str] | None = None
    # A model's lifecycle (None for a route).
    lifecycle: ModelLifecycle | None = None


class ModelList(Model):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def _card(spec: ModelSpec, default_model: str, today: dt.date | None = None) -> ModelCard:
    return ModelCard(
        id=spec.id,
        owned_by=spec.provider,
        default=spec.id == default_model,
        lifecycle=ModelLifecycle.of(spec, today or dt.datetime.now(dt.UTC).date()),
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
            generations=spec.generations,
            edits=InputCapabilities.of(spec.edits),
            variations=InputCapabilities.of(spec.variations),
        ),
    )


def list_models(registry: ModelRegistry, today: dt.date | None = None) -> ModelList:
    """Every model a request may name today (with its lifecycle), then every route (its models in order, and what all
    of them take)."""
    day = today or dt.datetime.now(dt.UTC).date()
    served = {spec.id: spec for spec in registry.models}
    routes = [
        _route_card(alias, [served[m] for m in members if m in served], registry.default_model)
        for alias, members in registry.routes.items()
    ]
    cards = [_card(spec, registry.default_model, day) for spec in served.values()]
    return ModelList(data=cards + [card for card in routes if card is not None])


def _route_card(alias: str, members: list[ModelSpec], default_model: str) -> ModelCard | None:
    """A route as a model: owned by "route", its current models in ``route``, and as capabilities what every one of
    them takes (a request outside them is refused; routes serve generations only)."""
    if not members:
        return None
    cards = [_card(spec, default_model).capabilities for spec in members]
    first = cards[0]

    def common(values: list[list[str]]) -> list[str]:
        return [value for value in values[0] if all(value in other for other in values[1:])]

    capabilities = first.model_copy(
        update={
            "title": f"Route: {' → '.join(spec.id for spec in members)}",
            "sizes": common([card.sizes for card in cards]),
            "custom_sizes": None,
            "max_n": min(card.max_n for card in cards),
            "max_prompt_chars": min(card.max_prompt_chars for card in cards),
            "qualities": common([card.qualities for card in cards]),
            "styles": common([card.styles for card in cards]),
            "response_formats": common([card.response_formats for card in cards]),
            "output_formats": common([card.output_formats for card in cards]),
            "complexities": common([card.complexities for card in cards]),
            "backgrounds": common([card.backgrounds for card in cards]),
            "generations": all(card.generations for card in cards),
            "edits": None,
            "variations": None,
        }
    )
    return ModelCard(
        id=alias, owned_by="route", default=alias == default_model, capabilities=capabilities, route=[spec.id for spec in members]
    )
