"""Black Forest Labs' FLUX API: one task per image, submitted and then polled until it is ready, its result
downloaded at once.

``POST {base_url}/{provider_model}`` with ``x-key: <key>`` and a JSON body answers ``{"id", "polling_url"}``;
``GET polling_url`` (with ``x-key``) answers ``{"id", "status", "result"}`` until ``status`` is ``Ready`` and
``result.sample`` is a signed URL of the image, which expires after about 10 minutes, so it is downloaded in the same
call (without the key: the delivery host is not the API). ``n`` images are ``n`` tasks, all submitted first and
then polled together, so they run side by side at BFL.

The polling and delivery URLs come from BFL's answer. They are followed only when they are https (http only on
loopback) on a host under ``bfl.ai``/``bfl.ml`` or the configured base URL's own origin (delivery also on BFL's
legacy Azure blob host), so a tampered answer cannot send the key, or this function's requests, elsewhere.

Verified (BFL's own docs and OpenAPI, as seen 2026-12-03 through the search tool):
- the submit paths ``/v1/flux-pro-1.1``, ``/v1/flux-pro-1.1-ultra``, ``/v1/flux-kontext-pro`` and the ``x-key``
  header, the answer ``{"id", "polling_url"}`` (docs.bfl.ml quick start; the openapi.json excerpt of
  ``/v1/flux-pro-1.1-ultra``, whose input takes ``aspect_ratio``, ``output_format`` ``jpeg``/``png``, ``seed``,
  ``safety_tolerance``, ``raw``, and whose 422 is FastAPI's ``{"detail": [{"loc", "msg", "type"}]}``);
- the statuses ``Ready``, ``Pending``, ``Request Moderated``, ``Content Moderated``, ``Task not found``, ``Error``
  and the HTTP errors 400, 402 (no credits), 403, 422, 429, 500, 503 (https://docs.bfl.ai/api_integration/errors);
- prices in credits of $0.01: FLUX1.1 [pro] 4, Ultra 6, Kontext [pro] 4 (https://docs.bfl.ml/quick_start/pricing).
Assumed (third-party copies only, or not read):
- ``/v1/flux-2-pro`` with ``width``/``height`` 256..2048 (BFL's "bfl-api" skill on skills.sh, Comfy's router schema);
  FLUX.2 is priced per megapixel (3 credits the first, 1.5 each further one);
- Kontext's ``aspect_ratio`` (third-party TypeScript types), its range 3:7..7:3, and the pixel sizes drawn for each
  ratio (the catalog's sizes for Ultra and Kontext are what they draw at about 4 MP and 1 MP);
- ``Processing`` and ``Failed`` as statuses (the quick start's own loop checks ``Failed``); any status not listed is
  read as still running until the deadline;
- the 10-minute lifetime of result URLs (BFL's skill, one copy) and delivery hosts ``delivery-*.bfl.ai``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from imagegen.deadline import Deadline
from imagegen.errors import ContentPolicyError, ImageGenError, ProviderError, ProviderTimeoutError
from imagegen.planning import GenerationPlan
from imagegen.providers.base import ProviderImage, ProviderResult
from imagegen.providers.fanout import nearest_ratio
from imagegen.providers.upstream import MAX_RETRIES, Call, KeyedUpstream, Upstream, error_for, redact_keys, retry_after

# BFL's own examples poll every 0.5 s.
POLL_INTERVAL_SECONDS = 0.5
# Hosts BFL's answers may point at: the API (api.bfl.ai, api.eu.bfl.ai, api.us1.bfl.ai, ...) and its delivery
# (delivery-eu1.bfl.ai, ...); bfl.ml is BFL's former domain.
BFL_DOMAINS = ("bfl.ai", "bfl.ml")
# Where older results were delivered from (https only, and never sent the key).
LEGACY_DELIVERY_HOSTS = frozenset({"bfldeliverysc.blob.core.windows.net"})
# An Ultra PNG of about 4 MP is some 12 MB at worst: a bigger "image" is no image of BFL's.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Models that take an aspect ratio instead of a width and height, by the prefix of their path.
ASPECT_RATIO_MODELS = ("flux-pro-1.1-ultra", "flux-kontext-")
ASPECT_RATIOS = ("21:9", "16:9", "3:2", "4:3", "1:1", "3:4", "2:3", "9:16", "9:21")
IN_PROGRESS = frozenset({"Pending", "Processing", "Queued"})
MODERATED = frozenset({"Request Moderated", "Content Moderated"})
FAILED = frozenset({"Error", "Failed", "Task not found"})
ASYNC_HINT = (
    "Send the request again with the header 'Prefer: respond-async' to run it as an asynchronous job (202 with a "
    "Location; poll GET /v1/images/jobs/{id}), which may take longer than a synchronous request can wait."
)


def aspect_ratio(width: int, height: int) -> str:
    """The ratio BFL takes closest to ``width``:``height``."""
    return nearest_ratio(width, height, ASPECT_RATIOS)


def build_request_body(plan: GenerationPlan) -> dict[str, Any]:
    """The JSON body of one task: the prompt, the size (pixels, or the nearest ratio for Ultra and Kontext) and the
    format."""
    body: dict[str, Any] = {"prompt": plan.prompt}
    if plan.model.provider_model.startswith(ASPECT_RATIO_MODELS):
        body["aspect_ratio"] = aspect_ratio(plan.width, plan.height)
    else:
        body["width"], body["height"] = plan.width, plan.height
    body["output_format"] = "jpeg" if plan.output_format == "jpeg" else "png"
    return body


def _detail(payload: Any) -> tuple[str | None, str | None]:
    """BFL's (FastAPI's) error body: ``{"detail": "..."}`` or ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``,
    as a message and the request field it names."""
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, str):
        return detail, None
    if isinstance(detail, list) and detail and all(isinstance(item, dict) for item in detail):
        parts, param = [], None
        for item in detail:
            loc = [str(part) for part in item.get("loc") or [] if part != "body"]
            parts.append(f"{'.'.join(loc)}: {item.get('msg')}" if loc else str(item.get("msg")))
            param = param or (loc[0] if loc else None)
        return "; ".join(parts), param
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return payload["message"], None
    return None, None


def bfl_error(response: httpx.Response, *, key: str | None = None) -> ImageGenError:
    """An HTTP error of BFL's API through the one status table (402: out of credits)."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    message, param = _detail(payload)
    if message and key:
        message = message.replace(key, "[redacted]")
    return error_for(response.status_code, {"message": message, "param": param}, retry_after=retry_after(response))


def _delivery_error(response: httpx.Response) -> ImageGenError:
    return ProviderError(
        f"The image provider's result could not be downloaded (HTTP {response.status_code}).", code="provider_bad_response"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


@dataclass(frozen=True)
class Task:
    id: str
    polling_url: str


class BflProvider:
    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        api_key: Callable[[], str],
        max_retries: int = MAX_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._api = KeyedUpstream(
            client, api_key=api_key, auth_header=lambda key: {"x-key": key}, read_error=bfl_error, max_retries=max_retries, sleep=sleep
        )
        # The signed result URL needs no key, and its host must never see it.
        self._delivery = Upstream(client, auth_headers=lambda: {}, error_of=_delivery_error, max_retries=max_retries, sleep=sleep)

    # -- URLs from BFL's answers ---------------------------------------------------------------------------------

    def allowed_url(self, url: str, *, delivery: bool = False) -> bool:
        """https on a BFL host (or the configured base URL's own origin; http only on loopback)."""
        scheme, host, port = _origin(url)
        if not host or scheme not in ("https", "http"):
            return False
        if scheme == "http" and not _loopback(host):
            return False
        if (scheme, host, port) == _origin(self._base_url):
            return True
        bfl_host = any(host == domain or host.endswith(f".{domain}") for domain in BFL_DOMAINS)
        legacy = delivery and host in LEGACY_DELIVERY_HOSTS
        return scheme == "https" and port in (None, 443) and (bfl_host or legacy)

    def _checked(self, url: Any, what: str, *, delivery: bool = False) -> str:
        if not isinstance(url, str) or not self.allowed_url(url, delivery=delivery):
            raise ProviderError(
                f"The image provider answered a {what} that is not on its own hosts; it was not followed.",
                code="provider_bad_response",
            )
        return url

    # -- the calls -------------------------------------------------------------------------------------------------

    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        if plan.operation != "generation":
            raise ProviderError(
                f"The image provider of model '{plan.model.id}' does not make {plan.operation}s.", code="unsupported_operation"
            )
        body = build_request_body(plan)
        url = f"{self._base_url}/{plan.model.provider_model}"
        tasks = [self._submit(url, body, deadline) for _ in range(plan.n)]
        images = self._collect(tasks, deadline)
        return ProviderResult(images=tuple(ProviderImage(data=images[index]) for index in range(plan.n)))

    def _submit(self, url: str, body: dict[str, Any], deadline: Deadline) -> Task:
        response = self._api.send(Call("POST", url, json=body), deadline)
        try:
            payload = response.json()
            task_id, polling_url = payload["id"], payload["polling_url"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError("The image provider answered a task without an id or polling URL.", code="provider_bad_response") from exc
        if not isinstance(task_id, str):
            raise ProviderError("The image provider answered a task without an id.", code="provider_bad_response")
        return Task(task_id, self._checked(polling_url, "polling URL"))

    def _collect(self, tasks: list[Task], deadline: Deadline) -> dict[int, bytes]:
        """Polls every unfinished task once a round, downloading each result as soon as it is ready, until all are or
        the deadline leaves no room for another round."""
        interval = POLL_INTERVAL_SECONDS if self._poll_interval is None else self._poll_interval
        images: dict[int, bytes] = {}
        while True:
            try:
                for index, task in enumerate(tasks):
                    if index not in images:
                        sample = self._poll(task, deadline)
                        if sample is not None:
                            images[index] = self._download(sample, deadline)
            except ProviderTimeoutError as exc:
                raise self._still_pending(len(tasks) - len(images)) from exc
            if len(images) == len(tasks):
                return images
            if deadline.remaining() <= interval + 0.05:
                raise self._still_pending(len(tasks) - len(images))
            self._sleep(interval)

    def _still_pending(self, count: int) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            f"The image provider had not finished {count} of the request's images by the request deadline. {ASYNC_HINT}"
        )

    def _poll(self, task: Task, deadline: Deadline) -> str | None:
        """The result URL of a ready task, None while it runs; a refusal or failure as our error."""
        response = self._api.send(Call("GET", task.polling_url), deadline)
        try:
            payload = response.json()
            status = payload["status"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError("The image provider answered a result without a status.", code="provider_bad_response") from exc
        if status == "Ready":
            result = payload.get("result")
            sample = result.get("sample") if isinstance(result, dict) else None
            return self._checked(sample, "result URL", delivery=True)
        if status in MODERATED:
            what = "prompt" if status == "Request Moderated" else "generated image"
            raise ContentPolicyError(
                f"The provider's safety system refused the {what} ({status}).", param="prompt", code="content_policy_violation"
            )
        if status in FAILED:
            detail = payload.get("details") or payload.get("result")
            suffix = f": {redact_keys(str(detail))[:300]}" if detail and status != "Task not found" else ""
            raise ProviderError(f"The image provider's task ended with status '{status}'{suffix}.")
        if isinstance(status, str):
            return None  # Pending, Processing, or a state this code does not know yet: keep polling
        raise ProviderError("The image provider answered a result without a status.", code="provider_bad_response")

    def _download(self, url: str, deadline: Deadline) -> bytes:
        """The result's bytes, read as they come and at most MAX_IMAGE_BYTES of them."""
        response = self._delivery.send(Call("GET", url), deadline, stream=True)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise ProviderError("The image provider's result is larger than any image it draws.", code="provider_bad_response")
                chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError("The image provider's result did not download before the request deadline.") from exc
        except httpx.TransportError as exc:
            raise ProviderError("The image provider's result download broke off.", code="provider_unreachable") from exc
        finally:
            response.close()
        data = b"".join(chunks)
        if not data:
            raise ProviderError("The image provider's result was empty.", code="provider_bad_response")
        return data
