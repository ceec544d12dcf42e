"""Routes: an alias in the registry document for an ordered list of models (``{"id": "fast", "route":
["gpt-image-1-mini", "amazon.nova-canvas-v1:0"]}``).

A request naming a route is planned for every model of it, each against its own rules, so a request one of them
cannot take is a 400 that names the model and why, before any provider is called. It is then served by the first
model, falling to the next on what another model may not suffer: a rate limit (429), a provider failure (5xx, an
answer we cannot use, no connection), a timeout, or a model that is unavailable (the provider refused the model or
this deployment's access to it). Never on the caller's own fault: a validation error or a content-policy refusal
is the answer, as it would be from any model. Every fall is counted (``ProviderFallbacks``) and logged, and the
answer names the model that served it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from imagegen.deadline import Deadline
from imagegen.errors import (
    ImageGenError,
    InsufficientQuotaError,
    InvalidRequestError,
    ModelNotFoundError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
)
from imagegen.observability import logger, metrics
from imagegen.options import ImageGenerationRequest
from imagegen.planning import GenerationPlan, plan
from imagegen.specs import ModelSpec

T = TypeVar("T")
# A fallback is tried only if a call still fits: below this, the last error is the answer.
MIN_FALLBACK_SECONDS = 1.0


def plan_route(route: str, members: Sequence[ModelSpec], request: ImageGenerationRequest) -> GenerationPlan:
    """``request`` planned for each current model of ``route``, in order: the first plan, with the others as its
    fallbacks. A member that refuses the request makes the whole route refuse it, naming that member."""
    if not members:
        raise ModelNotFoundError(f"Every model of the route '{route}' is retired; the deployment must update the route.", param="model")
    plans = []
    for spec in members:
        try:
            plans.append(plan(spec, request))
        except ImageGenError as error:
            if error.status_code >= 500:
                raise
            raise type(error)(
                f"The route '{route}' cannot take this request: its model '{spec.id}' refuses it. {error.message}",
                param=error.param,
                code=error.code,
            ) from error
    return plans[0].model_copy(update={"route": route, "fallbacks": tuple(plans[1:])})


def fitting(first: GenerationPlan, deadline: Deadline) -> GenerationPlan:
    """The plan with only the candidates that usually finish within ``deadline`` (a model's ``typical_seconds``),
    checked before anything is reserved, stored or called: a 400 ``async_required`` when none does, saying to send the
    request as an async job (``Prefer: respond-async``), whose deadline is the worker's."""
    remaining = deadline.remaining()
    fits = [candidate for candidate in first.candidates if (candidate.model.typical_seconds or 0) <= remaining]
    if len(fits) == len(first.candidates):
        return first
    if not fits:
        slowest = first.model
        raise InvalidRequestError(
            f"The model '{first.requested_model}' usually takes about {slowest.typical_seconds:g} s, longer than this "
            f"request can wait ({max(remaining, 0):.0f} s). Send it as an async job instead: add the header "
            "'Prefer: respond-async' and poll the job's Location.",
            param="model",
            code="async_required",
        )
    return fits[0].model_copy(update={"route": first.route, "fallbacks": tuple(fits[1:])})


def falls_through(error: ImageGenError) -> bool:
    """Whether another model of a route may serve what this error refused."""
    if isinstance(error, InsufficientQuotaError):  # this deployment's budget: no model can be billed
        return False
    return isinstance(error, RateLimitError | ProviderError | ProviderTimeoutError)


def served(first: GenerationPlan, deadline: Deadline, call: Callable[[GenerationPlan], T]) -> tuple[GenerationPlan, T]:
    """``call`` of the first candidate that serves it, and that candidate; the last error when none does (or the
    deadline leaves no room for the next)."""
    candidates = first.candidates
    for index, candidate in enumerate(candidates):
        try:
            return candidate, call(candidate)
        except ImageGenError as error:
            following = candidates[index + 1] if index + 1 < len(candidates) else None
            if following is None or not falls_through(error) or deadline.remaining() < MIN_FALLBACK_SECONDS:
                raise
            count_fallback(candidate, following, error)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def count_fallback(failed: GenerationPlan, following: GenerationPlan, error: ImageGenError) -> None:
    logger.warning(
        "falling to the next model of the route",
        extra={"route": failed.route, "model": failed.model.id, "next_model": following.model.id, "code": error.code},
    )
    with single_metric(name="ProviderFallbacks", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
        metric.add_dimension(name="route", value=failed.route or failed.model.id)
        metric.add_dimension(name="model", value=failed.model.id)
