"""Google's Gemini API (``generativelanguage.googleapis.com/v1beta``, the key in ``x-goog-api-key``): the Gemini
image models ("Nano Banana") through ``generateContent``, Imagen through ``:predict``.

Gemini (family ``gemini``): ``POST {base_url}/models/{model}:generateContent`` with
``{"contents": [{"parts": [{"text": prompt}]}], "generationConfig": {"responseModalities": ["IMAGE"],
"imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}}}``; the image is a part's ``inlineData``
(``mimeType``, base64 ``data``) in ``candidates[0].content.parts``. One call draws one image, so ``n`` images are
``n`` calls, made side by side (each bounded by the deadline through :class:`Upstream`). Parts marked
``"thought": true`` are the model's interim drafts (Gemini 3), never the answer. A refusal is
``promptFeedback.blockReason`` or a candidate's ``finishReason`` (``SAFETY``, ``IMAGE_SAFETY``,
``PROHIBITED_CONTENT``, ...): a ContentPolicyError. A candidate without an image otherwise is a bad response.

Imagen (family ``imagen``): ``POST {base_url}/models/{model}:predict`` with ``{"instances": [{"prompt": ...}],
"parameters": {"sampleCount": n, "aspectRatio": "1:1", "includeRaiReason": true}}`` answers
``{"predictions": [{"bytesBase64Encoded", "mimeType"}]}``; an image Google's filter removed is missing (or a
prediction holding only ``raiFilteredReason``), so fewer images than asked is a ContentPolicyError.

Errors are Google's ``{"error": {"code", "message", "status", "details"}}``, read into :func:`error_for`'s table.
Two of Google's answers are read as what they mean rather than by their status: a wrong key is a 400
``INVALID_ARGUMENT`` with the reason ``API_KEY_INVALID`` (read as 401), and ``FAILED_PRECONDITION`` (a region or
billing the account lacks) as 403: neither is the caller's fault. A 429's ``google.rpc.RetryInfo.retryDelay``
becomes Retry-After when no header says so.

Sizes: the catalog lists the pixels Google draws per aspect ratio; a size is sent as the ratio nearest to it
(:func:`aspect_ratio`) and, for more than 1K's pixels, as ``imageSize`` 2K or 4K (Gemini 3 only: the catalog lists
larger sizes for no other model). Formats: the Gemini API takes no output format for Gemini models (its SDK refuses
``output_mime_type`` outside Vertex), and Lambda has no image codec to convert with, so the catalog gives Gemini models
no ``output_format`` choice and each its native format; bytes in another format than the plan's are refused as a bad
response rather than stored under a format the plan did not bound.

Verified (read 2026-12-03):
- google-genai (googleapis/python-genai @ 66807187, 2026-08-21): ``generateContent`` with ``responseModalities`` and
  ``imageConfig`` (``aspectRatio``, ``imageSize``; README's image example sends ``["IMAGE"]``), Imagen's ``:predict``
  body (``instances[].prompt``, ``parameters.sampleCount/aspectRatio/includeRaiReason/outputOptions.mimeType``) and
  answer (``bytesBase64Encoded``, ``mimeType``, ``raiFilteredReason``); the ``FinishReason`` and ``BlockedReason``
  values; the current model ids ``gemini-2.5-flash-image``, ``gemini-3.1-flash-image``, ``gemini-3-pro-image``;
  that ``output_mime_type`` is refused on the Gemini Developer API; and commit 43ef621f (2026-08-21) "Disable
  GenerateImages for Gemini API": Imagen is no longer served there, so the catalog retires it on that day;
- ``x-goog-api-key`` (ai.google.dev/api).
Assumed (third parties only):
- the pixel sizes per ratio (gptproto's copy of Google's table for 2.5 Flash Image; for Gemini 3 the table that
  several client libraries agree on; Imagen's from Vertex AI's docs as remembered);
- the formats: PNG from 2.5 Flash Image, JPEG from the Gemini 3 models (a published agent skill; ComfyUI #12511 saw
  Gemini 3 Pro answer PNG at times, python-genai #1824 a PNG ``mimeType`` on JPEG bytes, so bytes are sniffed);
- the error bodies' wording (Google's canonical codes are documented; the messages are as reported by users);
- Imagen 4 Ultra drawing one image per request; a 400 naming "Responsible AI" as a prompt refusal.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx

from imagegen.deadline import Deadline
from imagegen.errors import ContentPolicyError, ImageGenError, ProviderError
from imagegen.planning import GenerationPlan
from imagegen.providers.base import ProviderImage, ProviderResult, sniff_format
from imagegen.providers.fanout import nearest_ratio, side_by_side
from imagegen.providers.upstream import MAX_RETRIES, Call, KeyedUpstream, error_for, redact_keys, retry_after

GEMINI_ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGEN_ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
# Gemini 3's imageSize tiers by pixels drawn (1K is about 1 MP, 2K 4 MP, 4K 16 MP); 1K is the default, never sent.
IMAGE_SIZE_TIERS = ((2_000_000, "1K"), (8_000_000, "2K"))
# Finish reasons and block reasons that are Google's safety or policy system refusing (google-genai FinishReason,
# BlockedReason); RECITATION is a refusal to reproduce protected material.
REFUSED = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
        "JAILBREAK",
    }
)
# Google's canonical statuses read as another HTTP status than the one they come with (see the module docstring).
STATUS_AS = {"FAILED_PRECONDITION": 403}
# A Google API key (AIza + 35 characters), should a message ever echo one.
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_-]{20,}")
_URLSAFE_B64 = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")
MAX_CONCURRENT_CALLS = 8


def aspect_ratio(width: int, height: int, ratios: tuple[str, ...] = GEMINI_ASPECT_RATIOS) -> str:
    """The ratio of ``ratios`` nearest to ``width``:``height``: Google draws sizes near, not exactly at, its ratios."""
    return nearest_ratio(width, height, ratios)


def image_size(width: int, height: int) -> str:
    """Gemini 3's ``imageSize`` for a size: 1K, 2K or 4K by its pixels."""
    pixels = width * height
    return next((tier for bound, tier in IMAGE_SIZE_TIERS if pixels <= bound), "4K")


def gemini_body(plan: GenerationPlan) -> dict[str, Any]:
    image_config: dict[str, Any] = {"aspectRatio": aspect_ratio(plan.width, plan.height)}
    tier = image_size(plan.width, plan.height)
    if tier != "1K":
        image_config["imageSize"] = tier
    return {
        "contents": [{"parts": [{"text": plan.prompt}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": image_config},
    }


def imagen_body(plan: GenerationPlan) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "sampleCount": plan.n,
        "aspectRatio": aspect_ratio(plan.width, plan.height, IMAGEN_ASPECT_RATIOS),
        "includeRaiReason": True,
    }
    if plan.output_format == "jpeg":
        parameters["outputOptions"] = {"mimeType": "image/jpeg"}
    return {"instances": [{"prompt": plan.prompt}], "parameters": parameters}


def _bad(what: str) -> ProviderError:
    return ProviderError(f"The image provider answered {what}.", code="provider_bad_response")


def _refused(what: str, reason: str) -> ContentPolicyError:
    return ContentPolicyError(
        f"The provider's safety system refused the {what} ({redact_keys(reason)[:200]}).",
        param="prompt",
        code="content_policy_violation",
    )


def _decode(data: Any) -> bytes:
    if not isinstance(data, str) or not data:
        raise _bad("an image without data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        pass
    if _URLSAFE_B64.match(data):  # proto3 JSON parsers take the URL-safe alphabet too
        try:
            return base64.urlsafe_b64decode(data)
        except (binascii.Error, ValueError):
            pass
    raise _bad("an image that is not base64")


def _usage(payload: Mapping[str, Any]) -> dict[str, int] | None:
    metadata = payload.get("usageMetadata")
    if not isinstance(metadata, dict):
        return None
    names = {"input_tokens": "promptTokenCount", "output_tokens": "candidatesTokenCount", "total_tokens": "totalTokenCount"}
    usage = {ours: value for ours, theirs in names.items() if isinstance(value := metadata.get(theirs), int)}
    return usage or None


def parse_gemini(payload: Any) -> tuple[bytes, dict[str, int] | None]:
    """The image of a generateContent answer (the first part with inline data that is not a thought) and its
    usage; a refusal as a ContentPolicyError."""
    if not isinstance(payload, dict):
        raise _bad("something that is not a JSON object")
    feedback = payload.get("promptFeedback")
    block = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if isinstance(block, str) and block:
        raise _refused("prompt", block)
    candidates = payload.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        raise _bad("no candidate")
    candidate = candidates[0]
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        inline = part.get("inlineData", part.get("inline_data"))
        if isinstance(inline, dict):
            return _decode(inline.get("data")), _usage(payload)
    reason = candidate.get("finishReason")
    if isinstance(reason, str) and reason in REFUSED:
        raise _refused("image", reason)
    said = next((part["text"] for part in parts or [] if isinstance(part, dict) and isinstance(part.get("text"), str)), None)
    suffix = f" (finish reason {reason})" if isinstance(reason, str) else ""
    if said:
        suffix += f": {redact_keys(said)[:200]}"
    raise _bad(f"no image{suffix}")


def parse_imagen(payload: Any, n: int) -> list[bytes]:
    """The ``n`` images of a :predict answer; fewer (Google's filter removed some) as a ContentPolicyError."""
    if not isinstance(payload, dict):
        raise _bad("something that is not a JSON object")
    predictions = payload.get("predictions", [])
    if not isinstance(predictions, list):
        raise _bad("predictions that are not a list")
    images = [_decode(item["bytesBase64Encoded"]) for item in predictions if isinstance(item, dict) and "bytesBase64Encoded" in item]
    if len(images) >= n:
        return images[:n]
    reasons = [str(item["raiFilteredReason"]) for item in predictions if isinstance(item, dict) and item.get("raiFilteredReason")]
    why = reasons[0] if reasons else "no reason given"
    raise _refused(f"{n - len(images)} of {n} images", why)


def _retry_info(details: Any) -> dict[str, str]:
    """Retry-After from ``google.rpc.RetryInfo`` (``"retryDelay": "37s"``)."""
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return {"Retry-After": str(max(1, math.ceil(float(match[1]))))}
    return {}


def _reasons(details: Any) -> set[str]:
    return (
        {str(detail["reason"]) for detail in details if isinstance(detail, dict) and "reason" in detail}
        if isinstance(details, list)
        else set()
    )


def google_error(response: httpx.Response, *, key: str | None = None) -> ImageGenError:
    """An HTTP error of the Gemini API through the one status table."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    message = error.get("message") if isinstance(error.get("message"), str) else None
    if message:
        message = _GOOGLE_KEY.sub("[redacted]", message.replace(key, "[redacted]") if key else message)
    status_name = error.get("status") if isinstance(error.get("status"), str) else None
    status = response.status_code
    if "API_KEY_INVALID" in _reasons(error.get("details")):
        status = 401
    elif status_name in STATUS_AS:
        status = STATUS_AS[status_name]
    code: str | None = None
    if status == 400 and message and "responsible ai" in message.lower():
        code = "content_policy_violation"
    headers = retry_after(response) or _retry_info(error.get("details"))
    return error_for(status, {"message": message, "code": code}, retry_after=headers)


class GoogleProvider:
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
        self._executor = executor or ThreadPoolExecutor(max_workers=MAX_CONCURRENT_CALLS, thread_name_prefix="google")
        self._api = KeyedUpstream(
            client,
            api_key=api_key,
            auth_header=lambda key: {"x-goog-api-key": key},
            read_error=google_error,
            max_retries=max_retries,
            sleep=sleep,
        )

    def _url(self, plan: GenerationPlan, method: str) -> str:
        return f"{self._base_url}/models/{plan.model.provider_model}:{method}"

    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        if plan.operation != "generation":
            raise ProviderError(
                f"The image provider of model '{plan.model.id}' does not make {plan.operation}s.", code="unsupported_operation"
            )
        if plan.model.family == "imagen":
            response = self._api.send(Call("POST", self._url(plan, "predict"), json=imagen_body(plan)), deadline)
            images = parse_imagen(_json(response), plan.n)
            return ProviderResult(images=tuple(ProviderImage(data=_checked(data, plan)) for data in images))
        calls = [partial(self._gemini_call, plan, deadline) for _ in range(plan.n)]
        results = side_by_side(self._executor, calls, deadline, provider="the Gemini API")
        return ProviderResult(images=tuple(ProviderImage(data=data) for data, _ in results), usage=_total([usage for _, usage in results]))

    def _gemini_call(self, plan: GenerationPlan, deadline: Deadline) -> tuple[bytes, dict[str, int] | None]:
        response = self._api.send(Call("POST", self._url(plan, "generateContent"), json=gemini_body(plan)), deadline)
        data, usage = parse_gemini(_json(response))
        return _checked(data, plan), usage


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise _bad("a body that is not JSON") from exc


def _checked(data: bytes, plan: GenerationPlan) -> bytes:
    """``data`` when it is an image in the plan's format (sniffed: Google's ``mimeType`` has been seen wrong)."""
    found, _ = sniff_format(data)
    if found != plan.output_format:
        raise _bad(f"a {found.upper()} image where {plan.output_format.upper()} was planned for model '{plan.model.id}'")
    return data


def _total(usages: list[dict[str, int] | None]) -> dict[str, int] | None:
    """The usage of all calls, summed; None unless every call reported one."""
    known = [usage for usage in usages if usage is not None]
    if not known or len(known) != len(usages):
        return None
    keys = set.intersection(*(set(usage) for usage in known))
    return {key: sum(usage[key] for usage in known) for key in sorted(keys)} or None
