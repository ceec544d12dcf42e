"""The deployment's models (:class:`ModelRegistry`): the catalog, narrowed and extended by the registry document
from ``MODEL_REGISTRY`` (JSON in the environment, validated with the settings) or from the SSM parameter
``MODEL_REGISTRY_PARAMETER`` (read with Powertools parameters), else the providers' defaults; resolved once per
container. It is the one place that checks a request's model (served? retired?) before planning it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

from imagegen.errors import InvalidRequestError, ModelNotFoundError
from imagegen.options import ImageGenerationRequest
from imagegen.planning import GenerationPlan, allowed, plan
from imagegen.registry_document import RegistryDocument
from imagegen.routing import plan_route
from imagegen.settings import Settings
from imagegen.specs import BEDROCK_GEO_PREFIXES, ModelSpec, ProviderName, azure_models, catalog, catalog_spec

PARAMETER_MAX_AGE_SECONDS = 300
# Providers served over httpx with a key of their own, and what their key is called in an error.
KEYED_PROVIDERS: tuple[ProviderName, ...] = ("google", "bfl", "stability")
KEY_NAMES: Mapping[str, str] = {
    "openai": "OpenAI key",
    "google": "Google API key (GOOGLE_API_KEY)",
    "bfl": "Black Forest Labs key (BFL_API_KEY)",
    "stability": "Stability AI key (STABILITY_API_KEY)",
}


class ModelRegistry:
    """The models this deployment serves, and the one place that checks a request against them."""

    def __init__(
        self,
        models: Iterable[ModelSpec],
        default_model: str,
        *,
        routes: Mapping[str, Sequence[str]] | None = None,
        today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
    ) -> None:
        self._models = {spec.id: spec for spec in models}
        self.routes = {alias: tuple(members) for alias, members in (routes or {}).items()}
        self._today = today
        unknown = {alias: [m for m in members if m not in self._models] for alias, members in self.routes.items()}
        if any(unknown.values()) or set(self.routes) & set(self._models):
            raise ValueError(f"routes must name served models and have ids of their own: {self.routes}")
        if default_model in self.routes:
            self.default_model = default_model
            return
        if default_model not in self._models:
            raise ValueError(f"DEFAULT_MODEL {default_model!r} is not served here; choose one of {sorted(self._models)}")
        if self._models[default_model].retired(today()):
            raise ValueError(f"DEFAULT_MODEL {default_model!r} is retired; choose a current model")
        self.default_model = default_model

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """The models a request may name today (retired ones are refused, so not listed)."""
        day = self._today()
        return tuple(spec for spec in self._models.values() if not spec.retired(day))

    def get(self, model_id: str) -> ModelSpec:
        spec = self._models.get(model_id)
        if spec is None and model_id in self.routes:
            raise InvalidRequestError(
                f"'{model_id}' is a route of models ({', '.join(self.routes[model_id])}), which serves generations only; "
                "name one of its models for edits and variations.",
                param="model",
                code="unsupported_operation",
            )
        if spec is None and (known := catalog_spec(model_id)) is not None and known.retired(self._today()):
            spec = known  # retired everywhere: say so, whichever providers this deployment serves
        if spec is None:
            raise ModelNotFoundError(
                f"The model '{model_id}' does not exist or is not served by this deployment. "
                f"Available models: {allowed(spec.id for spec in self.models)}.",
                param="model",
            )
        if spec.retired(self._today()):
            raise ModelNotFoundError(
                f"The model '{model_id}' was retired on {spec.retired_on:%Y-%m-%d} and is no longer available"
                + (f"; use '{spec.successor}' instead." if spec.successor else "."),
                param="model",
                code="model_retired",
            )
        return spec

    def plan(self, request: ImageGenerationRequest) -> GenerationPlan:
        """``request`` planned for its model, or for every current model of its route (:mod:`imagegen.routing`)."""
        model_id = request.model or self.default_model
        members = self.routes.get(model_id)
        if members is None:
            return plan(self.get(model_id), request)
        day = self._today()
        return plan_route(model_id, [self._models[m] for m in members if not self._models[m].retired(day)], request)

    def for_inputs(self, model_id: str | None, operation: Literal["edit", "variation"]) -> ModelSpec:
        """The model of an edit or a variation: the one named (which must take that operation), else the default
        model when it does, else the first served model that does."""
        able = [spec for spec in self.models if (spec.edits if operation == "edit" else spec.variations) is not None]
        endpoint = "/v1/images/edits" if operation == "edit" else "/v1/images/variations"
        served = f"models that do here: {allowed(spec.id for spec in able)}" if able else "no model of this deployment does"
        if model_id is None:
            default = self._models.get(self.default_model)
            if default in able:
                return default
            if not able:
                raise InvalidRequestError(f"This deployment serves no model for {endpoint}.", param="model", code="unsupported_operation")
            return able[0]
        spec = self.get(model_id)
        if spec not in able:
            what = "edit images" if operation == "edit" else "make variations"
            raise InvalidRequestError(
                f"The model '{model_id}' does not {what} ({endpoint}); {served}.", param="model", code="unsupported_operation"
            )
        return spec


def _bedrock_models(ids: Sequence[str]) -> tuple[ModelSpec, ...]:
    specs = {model_id: catalog_spec(model_id) for model_id in dict.fromkeys(ids)}
    unknown = [model_id for model_id, spec in specs.items() if spec is None or spec.provider != "bedrock"]
    if unknown:
        known = sorted(spec.id for spec in catalog().of("bedrock"))
        raise ValueError(
            f"BEDROCK_MODELS lists unknown models {unknown}; Bedrock models are {known}, each also as a cross-Region "
            f"inference profile '<geo>.<model id>' with geo one of {list(BEDROCK_GEO_PREFIXES)}"
        )
    return tuple(spec for spec in specs.values() if spec is not None)


def build_registry(
    *,
    openai_enabled: bool,
    default_model: str | None,
    bedrock_enabled: bool = False,
    bedrock_models: Sequence[str] = (),
    document: RegistryDocument | None = None,
    azure_deployments: Mapping[str, str] | None = None,
    keyed_providers: Iterable[ProviderName] = (),
) -> ModelRegistry:
    """The registry of this deployment. With a registry document: exactly the models it lists (OpenAI's need a key).
    Without: the local model always, OpenAI's when a key is configured, Bedrock's when enabled (all of them, or those
    in ``bedrock_models``); the default is ``default_model``, else OpenAI's default in the catalog, else the first
    Azure or Bedrock model, else local. Azure OpenAI models (``azure/<id>``, one per configured deployment) are
    served in either case. Google's, Black Forest Labs' and Stability AI's models (``keyed_providers``: those whose
    key is configured) are served like OpenAI's."""
    known = catalog()
    azure = azure_models(azure_deployments or {})
    keyed = frozenset(keyed_providers) | ({"openai"} if openai_enabled else set())
    if document is not None:
        specs = (*document.specs(), *azure)
        for provider in ("openai", *KEYED_PROVIDERS):
            needs_key = [spec.id for spec in specs if spec.provider == provider]
            if needs_key and provider not in keyed:
                raise ValueError(f"the model registry lists {needs_key} but no {KEY_NAMES[provider]} is configured")
        routes = {alias: route.route for alias, route in document.routes.items()}
        return ModelRegistry(specs, default_model or document.default_model or specs[0].id, routes=routes)
    bedrock = _bedrock_models(bedrock_models) if bedrock_models else known.of("bedrock") if bedrock_enabled else ()
    others = tuple(spec for provider in KEYED_PROVIDERS if provider in keyed for spec in known.of(provider))
    models = (*known.of("local"), *(known.of("openai") if openai_enabled else ()), *azure, *bedrock, *others)
    first = azure[0].id if azure else bedrock[0].id if bedrock else known.defaults["local"]
    fallback = known.defaults["openai"] if openai_enabled else first
    return ModelRegistry(models, default_model or fallback)


def read_registry_document(settings: Settings) -> RegistryDocument | None:
    """The registry document: MODEL_REGISTRY (validated with the settings), else the SSM parameter, else none."""
    if settings.model_registry is not None:
        return settings.model_registry
    if settings.model_registry_parameter is None:
        return None
    from aws_lambda_powertools.utilities import parameters

    document = parameters.get_parameter(settings.model_registry_parameter, max_age=PARAMETER_MAX_AGE_SECONDS)
    return RegistryDocument.model_validate_json(str(document))


def deployment_registry(settings: Settings) -> ModelRegistry:
    """A bad document or an impossible combination fails the container's first request loudly (a 500 with the
    reason in the logs), never serving models the deployment did not mean to."""
    return build_registry(
        openai_enabled=settings.openai_enabled,
        default_model=settings.default_model,
        bedrock_enabled=settings.bedrock_enabled,
        bedrock_models=settings.bedrock_models,
        document=read_registry_document(settings),
        azure_deployments=settings.azure_openai_deployments,
        keyed_providers=settings.keyed_providers,
    )
