"""Stability AI's own platform API (v2beta Stable Image): one image per call, ``n`` images are ``n`` calls made side by
side, each retried through :class:`Upstream` within the deadline.

``POST {base_url}/v2beta/stable-image/generate/{ultra|core|sd3}`` with ``Authorization: Bearer <key>``,
``accept: application/json`` and a multipart/form-data body of text fields: ``prompt``, ``aspect_ratio``,
``output_format`` and, for ``sd3``, ``model``. Each field is sent as a form part without a filename (httpx
``files=[(name, (None, value))]``): multipart without the dummy ``none`` file part of Stability's own Python examples.
The answer is ``{"image": "<base64>", "finish_reason": "SUCCESS"|"CONTENT_FILTERED", "seed": ...}``; an error is
``{"id", "name", "errors": ["..."]}``.

The catalog's ``provider_model`` is the endpoint, then for ``sd3`` the model after a slash: ``ultra``, ``core``,
``sd3/sd3.5-large``. The catalog lists sizes of Stability's exact aspect ratios (the same nine as Stability's models on
Bedrock); the ratio sent is :func:`imagegen.providers.bedrock.aspect_ratio` of the plan's width and height. Stability
draws at its own resolution for that ratio (about 1 to 1.5 megapixels), which the catalog bounds with
``max_output_pixels``.

Verified (as seen 2026-12-03 through the search tool; copies of Stability's API reference, platform.stability.ai/docs/
api-reference, in public repositories, not Stability's page itself):
- the endpoints, the multipart body, ``authorization`` and ``accept: application/json`` (base64 JSON) or ``image/*``;
  the fields ``prompt`` (1..10000 characters), ``aspect_ratio`` (16:9 1:1 21:9 2:3 3:2 4:5 5:4 9:16 9:21, default 1:1),
  ``output_format`` (jpeg png webp, default png), ``negative_prompt``, ``seed`` (0 or omitted: random), ``style_preset``
  and the ``stability-client-id`` / ``stability-client-user-id`` headers (gambithunt/imagen,
  .github/instructions/sd_core.instructions.md and sd_ultra.instructions.md);
- ``finish_reason`` ``SUCCESS`` or ``CONTENT_FILTERED`` ("output violated content policy": the image is blurred, and
  not charged), and the error body ``{"id", "name", "errors"}`` for 400, 403 (``name: content_moderation``, "Content
  Moderation Flagged"), 413, 422, 429 and 500 (a Stability MCP server's copy of the reference's response codes);
- the ``sd3`` models ``sd3.5-large``, ``sd3.5-large-turbo``, ``sd3.5-medium`` (several client libraries).
Assumed (not read from Stability):
- the pixel sizes Stability draws for each ratio (SDXL's ~1 MP buckets, e.g. 16:9 as 1344x768; the fake draws these);
- the 401 for a wrong key (``name: unauthorized``) and a 402 out of credits (``name: payment_required``): both go
  through the one status table whatever their body;
- errors of the form ``"<field>: <message>"``, from which the request field is named (``aspect_ratio`` -> ``size``);
- ``sd3.5-flash`` (one third-party enum only), so it is not in the catalog.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx

from imagegen.deadline import Deadline
from imagegen.errors import ContentPolicyError, ImageGenError, ProviderError
from imagegen.planning import GenerationPlan
from imagegen.providers.base import ProviderImage, ProviderResult
from imagegen.providers.bedrock import aspect_ratio
from imagegen.providers.fanout import side_by_side
from imagegen.providers.upstream import MAX_RETRIES, Call, KeyedUpstream, error_for, retry_after

GENERATE_PATH = "/v2beta/stable-image/generate"
ENDPOINTS = frozenset({"ultra", "core", "sd3"})
OUTPUT_FORMATS = frozenset({"png", "jpeg", "webp"})
CLIENT_ID = "imagegen-serverless"
# The error names that are a refusal by Stability's safety system.
MODERATION_NAMES = frozenset({"content_moderation"})
# Stability's form fields -> the request parameter they come from.
PARAMS = {"prompt": "prompt", "aspect_ratio": "size", "output_format": "output_format", "model": "model"}
# Calls of one request side by side (max_n is 4), with room for other requests of the same container.
MAX_CONCURRENT_CALLS = 16


def endpoint_and_model(provider_model: str) -> tuple[str, str | None]:
    """``"core"`` -> ``("core", None)``; ``"sd3/sd3.5-large"`` -> ``("sd3", "sd3.5-large")``."""
    endpoint, slash, model = provider_model.partition("/")
    if endpoint not in ENDPOINTS or (endpoint == "sd3") != bool(model) or (slash and not model):
        raise ValueError(f"'{provider_model}' is not a Stability endpoint ('ultra', 'core' or 'sd3/<model>')")
    return endpoint, model or None


def build_fields(plan: GenerationPlan) -> list[tuple[str, str]]:
    """The text fields of one call, in order."""
    _, model = endpoint_and_model(plan.model.provider_model)
    output_format = plan.output_format if plan.output_format in OUTPUT_FORMATS else "png"
    fields = [("prompt", plan.prompt), ("aspect_ratio", aspect_ratio(plan.width, plan.height)), ("output_format", output_format)]
    if model is not None:
        fields.append(("model", model))
    return fields


def multipart(fields: list[tuple[str, str]]) -> list[Any]:
    """Text fields as multipart parts without a filename (httpx sends multipart/form-data only when given files)."""
    return [(name, (None, value)) for name, value in fields]


def _param(errors: list[str]) -> str | None:
    for message in errors:
        field, separator, _ = message.partition(":")
        if separator and field.strip() in PARAMS:
            return PARAMS[field.strip()]
    return None


def stability_error(response: httpx.Response, *, key: str | None = None) -> ImageGenError:
    """Stability's ``{"id", "name", "errors"}`` as an OpenAI-style error (message: the errors joined, code: the name)
    through the one status table; ``content_moderation`` (Stability answers it with a 403) is a refusal."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    body = payload if isinstance(payload, dict) else {}
    name = body.get("name") if isinstance(body.get("name"), str) else None
    raw = body.get("errors")
    errors = [str(item) for item in raw] if isinstance(raw, list) else ([raw] if isinstance(raw, str) else [])
    message = "; ".join(errors) or None
    if message and key:
        message = message.replace(key, "[redacted]")
    status = response.status_code
    if name in MODERATION_NAMES and 400 <= status < 500:
        return error_for(400, {"message": message or "content moderation", "code": "content_policy_violation", "param": "prompt"})
    return error_for(status, {"message": message, "code": name, "param": _param(errors)}, retry_after=retry_after(response))


def parse_image(response: httpx.Response) -> ProviderImage:
    """The image of a 200 answer; a filtered image is a refusal, anything else unreadable a bad response."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise ProviderError("The image provider answered something other than a JSON object.", code="provider_bad_response")
    finish_reason = payload.get("finish_reason")
    if finish_reason == "CONTENT_FILTERED":
        raise ContentPolicyError(
            "The provider's safety system filtered the generated image (CONTENT_FILTERED).", param="prompt", code="content_policy_violation"
        )
    encoded = payload.get("image")
    if finish_reason != "SUCCESS" or not isinstance(encoded, str) or not encoded:
        raise ProviderError(
            f"The image provider answered no image (finish_reason {str(finish_reason)[:40]!r}).", code="provider_bad_response"
        )
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderError("The image provider answered an image that is not base64.", code="provider_bad_response") from exc
    return ProviderImage(data=data)


class StabilityProvider:
    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        api_key: Callable[[], str],
        max_retries: int = MAX_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._executor = executor or ThreadPoolExecutor(max_workers=MAX_CONCURRENT_CALLS, thread_name_prefix="stability")
        self._api = KeyedUpstream(
            client,
            api_key=api_key,
            auth_header=lambda key: {"Authorization": f"Bearer {key}"},
            read_error=stability_error,
            max_retries=max_retries,
            sleep=sleep,
        )

    def url(self, plan: GenerationPlan) -> str:
        endpoint, _ = endpoint_and_model(plan.model.provider_model)
        return f"{self._base_url}{GENERATE_PATH}/{endpoint}"

    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        """``plan.n`` calls side by side; each one's httpx timeout is cut to the deadline, so none outlives it. The
        first failure is the request's error (calls already running finish, and are billed, at Stability)."""
        if plan.operation != "generation":
            raise ProviderError(
                f"The image provider of model '{plan.model.id}' does not make {plan.operation}s.", code="unsupported_operation"
            )
        headers = {"accept": "application/json", "stability-client-id": CLIENT_ID}
        if plan.safety_identifier:
            headers["stability-client-user-id"] = plan.safety_identifier[:256]
        call = Call("POST", self.url(plan), files=multipart(build_fields(plan)), headers=headers)
        calls = [partial(self._one, call, deadline) for _ in range(plan.n)]
        return ProviderResult(images=tuple(side_by_side(self._executor, calls, deadline, provider="Stability AI")))

    def _one(self, call: Call, deadline: Deadline) -> ProviderImage:
        return parse_image(self._api.send(call, deadline))
