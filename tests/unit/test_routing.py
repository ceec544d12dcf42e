"""Routes with injected faults: which errors fall to the next model of a route and which are the answer, the
options re-validated for every model of a route, the plan that served recorded, every fall counted."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest
from pydantic import ValidationError

from imagegen.deadline import Deadline
from imagegen.errors import (
    ContentPolicyError,
    ImageGenError,
    InsufficientQuotaError,
    InvalidRequestError,
    PayloadTooLargeError,
    ProviderConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
)
from imagegen.options import ImageEditOptions, ImageGenerationRequest
from imagegen.providers.local import LocalProvider
from imagegen.providers.stability import stability_error
from imagegen.providers.upstream import Call, Upstream, error_for
from imagegen.registry import build_registry
from imagegen.registry_document import RegistryDocument
from imagegen.service import ImageService
from imagegen.settings import Settings
from tests.fakes.memory_store import InMemoryStore as _InMemoryStore

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)
DOCUMENT = {
    "models": ["local", "gpt-image-1-mini", {"id": "fast", "route": ["gpt-image-1-mini", "local"]}],
    "default_model": "local",
}


class InMemoryStore(_InMemoryStore):
    def put_all(self, objects, metadata, *, deadline=None) -> None:
        super().put_all(objects, metadata)


class Faulty:
    """A provider that fails with ``error`` (or succeeds like the local one when None), counting its calls."""

    def __init__(self, error: ImageGenError | None) -> None:
        self.error = error
        self.calls = 0

    def generate(self, plan, deadline):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return LocalProvider().generate(plan, deadline)


def service_with(openai: Faulty, document: dict | None = None) -> tuple[ImageService, Faulty, InMemoryStore]:
    local = Faulty(None)
    store = InMemoryStore()
    registry = build_registry(openai_enabled=True, default_model=None, document=RegistryDocument.model_validate(document or DOCUMENT))
    service = ImageService(
        registry=registry,
        provider_for=lambda name: openai if name == "openai" else local,
        store=store,
        settings=Settings(IMAGES_BUCKET="bucket", PRESIGN_TTL_SECONDS=900),
        clock=lambda: NOW,
    )
    return service, local, store


def generate(service: ImageService, deadline: float = 30, **fields):
    request = ImageGenerationRequest.model_validate({"prompt": "a fox", "model": "fast", **fields})
    return service.generate(request, request_id="req/1", deadline=Deadline.after(deadline))


FALLS_THROUGH = [
    RateLimitError("slow down", headers={"Retry-After": "20"}),
    ProviderError("The image provider failed (HTTP 500); try again later."),
    ProviderError("malformed", code="provider_bad_response"),
    ProviderTimeoutError("no answer in time"),
    ProviderConfigurationError("model not enabled", code="provider_model_unavailable"),
    ProviderConfigurationError("out of quota", code="provider_quota_exceeded"),
]


@pytest.mark.parametrize("error", FALLS_THROUGH, ids=lambda error: error.code)
def test_a_rate_limit_a_provider_failure_a_timeout_or_an_unavailable_model_falls_to_the_next(error) -> None:
    openai = Faulty(error)
    service, local, store = service_with(openai)
    answer = generate(service)
    assert (openai.calls, local.calls) == (1, 1)
    assert answer.served_by == "local"
    ((_, _, metadata),) = store.objects.values()
    assert metadata["model"] == "local"


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestError("bad size", param="size", code="invalid_value"),
        ContentPolicyError("refused", param="prompt", code="moderation_blocked"),
        InsufficientQuotaError("the key's budget is spent"),
    ],
    ids=lambda error: error.code,
)
def test_a_validation_error_or_a_content_policy_refusal_is_the_answer(error) -> None:
    openai = Faulty(error)
    service, local, store = service_with(openai)
    with pytest.raises(type(error)):
        generate(service)
    assert (openai.calls, local.calls) == (1, 0)
    assert store.objects == {}


def test_the_first_model_serves_when_it_can() -> None:
    openai = Faulty(None)
    service, local, _ = service_with(openai)
    assert generate(service).served_by == "gpt-image-1-mini"
    assert (openai.calls, local.calls) == (1, 0)


def test_the_last_models_error_is_the_answer() -> None:
    document = {"models": ["gpt-image-1-mini", "gpt-image-2", {"id": "openai-only", "route": ["gpt-image-1-mini", "gpt-image-2"]}]}
    openai = Faulty(RateLimitError("slow down", headers={"Retry-After": "7"}))
    service, _, _ = service_with(openai, document)
    with pytest.raises(RateLimitError) as raised:
        generate(service, model="openai-only", size="1024x1024")
    assert openai.calls == 2 and raised.value.headers["Retry-After"] == "7"


def test_no_fallback_when_the_deadline_leaves_no_room() -> None:
    openai = Faulty(ProviderError("The image provider failed (HTTP 500); try again later."))
    service, local, _ = service_with(openai)
    with pytest.raises(ProviderError):
        generate(service, deadline=0.5)
    assert local.calls == 0


def test_every_model_of_a_route_must_take_the_request_before_any_provider_is_called() -> None:
    """gpt-image-1-mini draws no 256x256; local does: a route of the two refuses it as a 400 naming the model and size."""
    document = {"models": ["local", "gpt-image-1-mini", {"id": "small", "route": ["local", "gpt-image-1-mini"]}]}
    openai = Faulty(None)
    service, local, _ = service_with(openai, document)
    with pytest.raises(InvalidRequestError) as raised:
        generate(service, model="small", size="256x256")
    assert raised.value.param == "size"
    assert "route 'small'" in raised.value.message and "'gpt-image-1-mini'" in raised.value.message
    assert (openai.calls, local.calls) == (0, 0)


def test_the_usage_record_is_of_the_model_that_served() -> None:
    openai = Faulty(ProviderError("The image provider failed (HTTP 503); try again later."))
    service, _, _ = service_with(openai)
    settled = []
    service.meter.settle = lambda charge, **kwargs: settled.append(charge.plan.model.id)  # type: ignore[method-assign]
    generate(service)
    assert settled == ["local"]


def test_every_fall_is_a_metric(monkeypatch, capsys) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")
    openai = Faulty(ProviderError("The image provider failed (HTTP 500); try again later."))
    service, _, _ = service_with(openai)
    generate(service)
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ProviderFallbacks"' in line]
    assert len(records) == 1
    assert (records[0]["route"], records[0]["model"], records[0]["ProviderFallbacks"]) == ("fast", "gpt-image-1-mini", [1.0])


def test_a_retired_model_of_a_route_is_passed_over() -> None:
    document = {"models": ["local", "dall-e-3", {"id": "old-first", "route": ["dall-e-3", "local"]}]}
    openai = Faulty(None)
    service, local, _ = service_with(openai, document)
    assert generate(service, model="old-first").served_by == "local"
    assert (openai.calls, local.calls) == (0, 1)


def test_a_route_serves_generations_only() -> None:
    service, _, _ = service_with(Faulty(None))
    with pytest.raises(InvalidRequestError) as raised:
        service.registry.for_inputs("fast", "edit")
    assert (raised.value.param, raised.value.code) == ("model", "unsupported_operation")
    assert isinstance(ImageEditOptions.model_validate({"prompt": "x", "model": "fast"}), ImageEditOptions)


def test_a_route_may_be_the_default_model() -> None:
    service, local, _ = service_with(Faulty(ProviderError("down")), {**DOCUMENT, "default_model": "fast"})
    answer = service.generate(ImageGenerationRequest(prompt="a fox"), request_id="req/2", deadline=Deadline.after(30))
    assert answer.served_by == "local" and local.calls == 1


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"models": ["local", {"id": "fast", "route": ["local", "gpt-image-1-mini"]}]}, "does not list as models"),
        ({"models": ["local", {"id": "local", "route": ["local"]}]}, "listed twice"),
        ({"models": ["local", {"id": "fast", "route": ["local", "local"]}]}, "names a model twice"),
        ({"models": ["local", {"id": "fast", "route": []}]}, "at least 1"),
        ({"models": [{"id": "fast", "route": ["local"]}]}, "no model"),
    ],
)
def test_bad_routes_are_refused(document, problem) -> None:
    with pytest.raises(ValidationError, match=problem):
        RegistryDocument.model_validate(document)


def slow_service(openai: Faulty, *, route: bool) -> tuple[ImageService, Faulty]:
    """gpt-image-1-mini as a model that usually takes 60 s (typical_seconds), alone or routed before local."""
    from imagegen.registry import ModelRegistry
    from imagegen.specs import catalog_spec

    slow = catalog_spec("gpt-image-1-mini")
    local_spec = catalog_spec("local")
    assert slow is not None and local_spec is not None
    registry = ModelRegistry(
        [slow.model_copy(update={"typical_seconds": 60}), local_spec],
        "local",
        routes={"fast": ("gpt-image-1-mini", "local")} if route else None,
    )
    local = Faulty(None)
    service = ImageService(
        registry=registry,
        provider_for=lambda name: openai if name == "openai" else local,
        store=InMemoryStore(),
        settings=Settings(IMAGES_BUCKET="bucket", PRESIGN_TTL_SECONDS=900),
        clock=lambda: NOW,
    )
    return service, local


def test_a_model_slower_than_the_deadline_is_refused_before_any_call_and_the_error_says_to_use_async() -> None:
    openai = Faulty(None)
    service, _ = slow_service(openai, route=False)
    with pytest.raises(InvalidRequestError) as raised:
        generate(service, model="gpt-image-1-mini", deadline=29)
    assert (raised.value.param, raised.value.code) == ("model", "async_required")
    assert "Prefer: respond-async" in raised.value.message and "60 s" in raised.value.message
    assert openai.calls == 0


def test_a_deadline_long_enough_for_the_slow_model_is_served_by_it() -> None:
    openai = Faulty(None)
    service, _ = slow_service(openai, route=False)
    assert generate(service, model="gpt-image-1-mini", deadline=900).served_by == "gpt-image-1-mini"


def test_a_route_passes_over_a_model_too_slow_for_the_deadline() -> None:
    openai = Faulty(None)
    service, local = slow_service(openai, route=True)
    assert generate(service, model="fast", deadline=29).served_by == "local"
    assert (openai.calls, local.calls) == (0, 1)


# Stability's answer to a request larger than it takes (its {"id", "name", "errors"} body), as its provider reads it.
TOO_LARGE = httpx.Response(413, json={"id": "e1", "name": "payload_too_large", "errors": ["body: payloads cannot be larger than 10MiB"]})


def test_a_413_from_the_first_model_is_the_answer_not_a_fall() -> None:
    openai = Faulty(stability_error(TOO_LARGE))
    service, local, store = service_with(openai)
    with pytest.raises(PayloadTooLargeError) as raised:
        generate(service)
    assert (openai.calls, local.calls) == (1, 0)
    assert store.objects == {}
    assert (raised.value.status_code, raised.value.body()["error"]["type"]) == (413, "invalid_request_error")
    assert raised.value.code == "payload_too_large" and "10MiB" in raised.value.message


def test_a_413_is_not_retried() -> None:
    calls = []

    def too_large(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(413, json=TOO_LARGE.json())

    upstream = Upstream(
        httpx.Client(transport=httpx.MockTransport(too_large)),
        auth_headers=dict,
        error_of=stability_error,
        sleep=lambda _: None,
    )
    with pytest.raises(PayloadTooLargeError):
        upstream.send(Call("POST", "https://api.example.test/v2beta/stable-image/generate/core"), Deadline.after(30))
    assert len(calls) == 1


@pytest.mark.parametrize("status", [408, 409, 415, 451])
def test_a_4xx_no_provider_documents_stays_a_provider_failure_that_falls_through(status: int) -> None:
    openai = Faulty(error_for(status, {"message": "odd"}))
    service, local, _ = service_with(openai)
    assert generate(service).served_by == "local"
    assert (openai.calls, local.calls) == (1, 1)
