"""The schema of a deployment's registry document (``MODEL_REGISTRY`` JSON, or the SSM parameter
``MODEL_REGISTRY_PARAMETER``): which catalog models to serve, with tighter limits, and models the catalog does not
know yet, declared with their family and limits. Settings validates it, so it depends on the catalog only;
:mod:`imagegen.registry` builds the deployment's models from it."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from imagegen.models import Model
from imagegen.specs import ModelSpec, catalog, catalog_spec


class ModelChoice(Model):
    """A catalog id, optionally with tighter limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    # Lower any model's limit; raise a Bedrock model's up to 10 (more calls per request: Nova/Titan draw 5 per call,
    # Stability 1, run concurrently).
    max_n: int | None = Field(default=None, ge=1, le=10)
    default_size: str | None = None

    def spec(self) -> ModelSpec:
        base = catalog_spec(self.id)
        assert base is not None  # RegistryDocument checks every id
        update: dict[str, object] = {}
        if self.max_n is not None:
            update["max_n"] = self.max_n
        if self.default_size is not None:
            update["default_size"] = self.default_size
        return base.model_copy(update=update)


class Route(Model):
    """An alias for an ordered list of the document's models: a request naming it is served by the first that can,
    falling to the next on a rate limit, a provider failure or timeout, or a model that is unavailable
    (:mod:`imagegen.routing`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    route: tuple[str, ...] = Field(min_length=1)


def _declared(value: dict[str, Any]) -> ModelSpec:
    """A model the catalog does not know (a new OpenAI snapshot): every field of a catalog entry, the id as the
    provider's model unless given."""
    return ModelSpec.model_validate({"provider_model": value.get("id"), **value})


class RegistryDocument(Model):
    """``{"models": ["local", "amazon.nova-canvas-v1:0", {"id": "stability.sd3-5-large-v1:0", "max_n": 2},
    {"id": "gpt-image-2.7", "provider": "openai", "family": "gpt-image", "sizes": ["1024x1024"], "max_prompt_chars": 32000},
    {"id": "fast", "route": ["gpt-image-1-mini", "amazon.nova-canvas-v1:0"]}], "default_model": "amazon.nova-canvas-v1:0"}``:
    an entry with a ``family`` declares a model, one with a ``route`` names an ordered list of the listed models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[ModelChoice | ModelSpec | Route, ...] = Field(min_length=1)
    default_model: str | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _entries(cls, value: object) -> object:
        if not isinstance(value, list | tuple):
            return value
        return [
            {"id": item}
            if isinstance(item, str)
            else _declared(item)
            if isinstance(item, dict) and "family" in item
            else Route.model_validate(item)
            if isinstance(item, dict) and "route" in item
            else item
            for item in value
        ]

    @model_validator(mode="after")
    def _known_models(self) -> RegistryDocument:
        ids = [entry.id for entry in self.models]
        choices = [entry for entry in self.models if isinstance(entry, ModelChoice)]
        unknown = [choice.id for choice in choices if catalog_spec(choice.id) is None]
        if unknown:
            raise ValueError(
                f"unknown model ids {unknown}; the catalog has {catalog().ids()} (Bedrock's also as '<geo>.<model id>'); "
                "declare a new model with its 'provider', 'family', 'sizes' and 'max_prompt_chars'"
            )
        if len(set(ids)) != len(ids):
            raise ValueError(f"a model is listed twice: {ids}")
        models = [entry.id for entry in self.models if not isinstance(entry, Route)]
        if not models:
            raise ValueError("the model registry lists routes but no model")
        for route in self.routes.values():
            strangers = [member for member in route.route if member not in models]
            if strangers:
                raise ValueError(f"route {route.id!r} names {strangers}, which the document does not list as models; list them first")
            if len(set(route.route)) != len(route.route):
                raise ValueError(f"route {route.id!r} names a model twice: {list(route.route)}")
        for entry in self.models:
            if isinstance(entry, Route):
                continue
            if isinstance(entry, ModelSpec):
                if catalog_spec(entry.id) is not None:
                    raise ValueError(f"{entry.id} is in the catalog: list its id (with max_n or default_size) instead of declaring it")
                if entry.provider not in ("openai", "bedrock"):
                    raise ValueError(f"{entry.id}: a declared model is served by 'openai' or 'bedrock', not {entry.provider!r}")
                continue
            base = catalog_spec(entry.id)
            assert base is not None  # checked above
            if entry.max_n is not None and entry.max_n > base.max_n and base.provider != "bedrock":
                raise ValueError(f"{entry.id}: max_n {entry.max_n} is above the model's own limit {base.max_n}")
            if entry.default_size is not None and entry.default_size not in base.sizes:
                raise ValueError(f"{entry.id}: default_size {entry.default_size!r} is not one of {list(base.sizes)}")
        if self.default_model is not None and self.default_model not in ids:
            raise ValueError(f"default_model {self.default_model!r} is not among the listed models")
        return self

    def specs(self) -> tuple[ModelSpec, ...]:
        return tuple(entry if isinstance(entry, ModelSpec) else entry.spec() for entry in self.models if not isinstance(entry, Route))

    @property
    def routes(self) -> dict[str, Route]:
        return {entry.id: entry for entry in self.models if isinstance(entry, Route)}

    @property
    def providers(self) -> frozenset[str]:
        return frozenset(spec.provider for spec in self.specs())
