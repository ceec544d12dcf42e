"""The Black Forest Labs provider against httpx.MockTransport: request building, the size mapping, polling, the URL
checks and the error table with BFL's own bodies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from imagegen import errors
from imagegen.deadline import Deadline
from imagegen.options import ImageGenerationRequest
from imagegen.planning import GenerationPlan, plan
from imagegen.providers.bfl import BflProvider, aspect_ratio, build_request_body
from imagegen.specs import catalog_spec

KEY = "3f2c5b0e-bfl-unit-key"
BASE = "https://api.bfl.ai/v1"
PNG = b"\x89PNG\r\n\x1a\nfake"


def make_plan(model: str = "flux-pro-1.1", **fields: Any) -> GenerationPlan:
    spec = catalog_spec(model)
    assert spec is not None
    return plan(spec, ImageGenerationRequest.model_validate({"prompt": "a red fox", **fields}))


Handler = Callable[[httpx.Request], httpx.Response]


class Bfl:
    """A scripted BFL: submit answers a task on the API host, polls answer ``statuses`` in turn, the result is on a
    delivery host."""

    def __init__(self, statuses: list[dict[str, Any]] | None = None, *, submit: Handler | None = None) -> None:
        self.statuses = statuses if statuses is not None else [{"status": "Pending"}, {"status": "Ready"}]
        self.submit = submit
        self.requests: list[httpx.Request] = []
        self.submitted = 0
        self.polls: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST":
            if self.submit is not None:
                return self.submit(request)
            self.submitted += 1
            task = f"task-{self.submitted}"
            return httpx.Response(200, json={"id": task, "polling_url": f"https://api.eu2.bfl.ai/v1/get_result?id={task}"})
        if request.url.host.startswith("delivery"):
            return httpx.Response(200, content=PNG + request.url.path.encode())
        task = request.url.params["id"]
        index = self.polls.get(task, 0)
        self.polls[task] = index + 1
        answer = dict(self.statuses[min(index, len(self.statuses) - 1)])
        if answer.get("status") == "Ready" and "result" not in answer:
            answer["result"] = {"sample": f"https://delivery-eu1.bfl.ai/results/{task}/sample.png?se=2026&sig=x"}
        return httpx.Response(200, json={"id": task, **answer})


def provider(handler: Handler, *, base_url: str = BASE, max_retries: int = 2) -> tuple[BflProvider, list[float]]:
    slept: list[float] = []
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return BflProvider(
        client, base_url=base_url, api_key=lambda: KEY, max_retries=max_retries, sleep=slept.append, poll_interval=0.01
    ), slept


def test_width_and_height_models_send_pixels_and_the_format() -> None:
    assert build_request_body(make_plan(size="1440x1024")) == {"prompt": "a red fox", "width": 1440, "height": 1024, "output_format": "png"}
    assert build_request_body(make_plan("flux-2-pro", size="1024x1536", output_format="jpeg"))["output_format"] == "jpeg"


@pytest.mark.parametrize(
    ("model", "size", "ratio"),
    [
        ("flux-pro-1.1-ultra", "2048x2048", "1:1"),
        ("flux-pro-1.1-ultra", "2752x1536", "16:9"),
        ("flux-pro-1.1-ultra", "1792x2368", "3:4"),
        ("flux-kontext-pro", "1392x752", "16:9"),
        ("flux-kontext-pro", "880x1184", "3:4"),
    ],
)
def test_ultra_and_kontext_send_the_nearest_aspect_ratio(model: str, size: str, ratio: str) -> None:
    body = build_request_body(make_plan(model, size=size))
    assert body == {"prompt": "a red fox", "aspect_ratio": ratio, "output_format": "png"}


def test_aspect_ratio_picks_the_closest() -> None:
    assert (aspect_ratio(3000, 1000), aspect_ratio(1000, 1000), aspect_ratio(1000, 1490)) == ("21:9", "1:1", "2:3")


def test_one_task_per_image_submitted_first_then_polled_with_the_key_and_downloaded_without() -> None:
    bfl = Bfl()
    result = provider(bfl)[0].generate(make_plan(n=3, size="1024x1024"), Deadline.after(10))
    assert [image.data for image in result.images] == [PNG + f"/results/task-{i}/sample.png".encode() for i in (1, 2, 3)]
    posts = [r for r in bfl.requests if r.method == "POST"]
    assert len(posts) == 3 and bfl.requests[:3] == posts  # all submitted before the first poll
    assert all(str(r.url) == f"{BASE}/flux-pro-1.1" and r.headers["x-key"] == KEY for r in posts)
    assert json.loads(posts[0].content) == {"prompt": "a red fox", "width": 1024, "height": 1024, "output_format": "png"}
    polls = [r for r in bfl.requests if r.url.host == "api.eu2.bfl.ai"]
    assert len(polls) == 6 and all(r.headers["x-key"] == KEY for r in polls)
    downloads = [r for r in bfl.requests if r.url.host == "delivery-eu1.bfl.ai"]
    assert len(downloads) == 3 and all("x-key" not in r.headers for r in downloads)


def test_processing_and_unknown_states_keep_polling() -> None:
    bfl = Bfl([{"status": "Processing"}, {"status": "Pending"}, {"status": "Queued"}, {"status": "Ready"}])
    prov, slept = provider(bfl)
    assert len(prov.generate(make_plan(), Deadline.after(10)).images) == 1
    assert bfl.polls == {"task-1": 4} and slept == [0.01, 0.01, 0.01]


def test_still_pending_at_the_deadline_is_a_timeout_that_says_to_use_async_jobs() -> None:
    bfl = Bfl([{"status": "Pending"}])
    prov = BflProvider(httpx.Client(transport=httpx.MockTransport(bfl)), base_url=BASE, api_key=lambda: KEY, poll_interval=0.05)
    with pytest.raises(errors.ProviderTimeoutError) as caught:
        prov.generate(make_plan(), Deadline.after(0.4))
    assert "Prefer: respond-async" in caught.value.message and "1 of the request's images" in caught.value.message
    assert 3 <= bfl.polls["task-1"] <= 9  # about every 0.05 s for 0.4 s, then stopped


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        ("Request Moderated", errors.ContentPolicyError, "content_policy_violation"),
        ("Content Moderated", errors.ContentPolicyError, "content_policy_violation"),
        ("Task not found", errors.ProviderError, "provider_error"),
        ("Error", errors.ProviderError, "provider_error"),
        ("Failed", errors.ProviderError, "provider_error"),
    ],
)
def test_final_statuses(status: str, error: type[errors.ImageGenError], code: str) -> None:
    bfl = Bfl([{"status": "Pending"}, {"status": status, "result": None, "details": {"Moderation Reasons": ["x"]}}])
    with pytest.raises(error) as caught:
        provider(bfl)[0].generate(make_plan(), Deadline.after(10))
    assert type(caught.value) is error and caught.value.code == code
    if error is errors.ContentPolicyError:
        assert caught.value.param == "prompt" and caught.value.status_code == 400


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    return lambda request: httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "body", "error", "code", "param"),
    [
        (400, {"detail": "Invalid request"}, errors.InvalidRequestError, "invalid_value", None),
        (402, {"detail": "Insufficient credits"}, errors.ProviderConfigurationError, "provider_quota_exceeded", None),
        (403, {"detail": "Not authenticated"}, errors.ProviderConfigurationError, "provider_auth_failed", None),
        (
            422,
            {"detail": [{"loc": ["body", "width"], "msg": "Input should be a multiple of 32", "type": "multiple_of"}]},
            errors.InvalidRequestError,
            "invalid_value",
            "width",
        ),
        (429, {"detail": "Too many active tasks"}, errors.RateLimitError, "rate_limit_exceeded", None),
        (500, {"detail": "Internal Server Error"}, errors.ProviderError, "provider_error", None),
        (503, {"detail": "Service Unavailable"}, errors.ProviderError, "provider_error", None),
    ],
)
def test_http_errors_through_the_status_table(
    status: int, body: Any, error: type[errors.ImageGenError], code: str | None, param: str | None
) -> None:
    bfl = Bfl(submit=_answer(status, body, {"Retry-After": "30"} if status == 429 else None))
    with pytest.raises(error) as caught:
        provider(bfl, max_retries=0)[0].generate(make_plan(), Deadline.after(10))
    assert type(caught.value) is error and caught.value.code == code and caught.value.param == param
    if status == 422:
        assert caught.value.message == "width: Input should be a multiple of 32"
    if status == 429:
        assert caught.value.headers["Retry-After"] == "30"


def test_the_key_is_redacted_from_an_echoed_message() -> None:
    bfl = Bfl(submit=_answer(400, {"detail": f"bad key {KEY} given"}))
    with pytest.raises(errors.InvalidRequestError) as caught:
        provider(bfl, max_retries=0)[0].generate(make_plan(), Deadline.after(10))
    assert KEY not in caught.value.message and "[redacted]" in caught.value.message


def test_429_is_retried_within_the_deadline() -> None:
    answers = iter([httpx.Response(429, json={"detail": "busy"}, headers={"Retry-After": "1"})])
    bfl = Bfl()

    def submit(request: httpx.Request) -> httpx.Response:
        bfl.submitted += 1
        return next(answers, None) or httpx.Response(200, json={"id": "t", "polling_url": "https://api.bfl.ai/v1/get_result?id=t"})

    bfl.submit = submit
    prov, slept = provider(bfl)
    assert len(prov.generate(make_plan(), Deadline.after(10)).images) == 1
    assert bfl.submitted == 2 and slept[0] == 1.0


@pytest.mark.parametrize(
    "url",
    [
        "http://api.bfl.ai/v1/get_result?id=t",  # http off loopback
        "https://api.bfl.ai.evil.com/v1/get_result?id=t",
        "https://evilbfl.ai/v1/get_result?id=t",
        "https://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9/v1/get_result?id=t",  # loopback, but not the configured origin
        "https://api.bfl.ai:8443/v1/get_result?id=t",
        "ftp://api.bfl.ai/x",
        None,
    ],
)
def test_a_polling_url_off_bfl_is_never_followed(url: str | None) -> None:
    bfl = Bfl(submit=_answer(200, {"id": "t", "polling_url": url}))
    with pytest.raises(errors.ProviderError) as caught:
        provider(bfl)[0].generate(make_plan(), Deadline.after(10))
    assert caught.value.code == "provider_bad_response"
    assert [r.method for r in bfl.requests] == ["POST"]  # the key went nowhere else


def test_a_result_url_off_bfl_is_never_downloaded() -> None:
    bfl = Bfl([{"status": "Ready", "result": {"sample": "https://evil.example.com/x.png"}}])
    with pytest.raises(errors.ProviderError) as caught:
        provider(bfl)[0].generate(make_plan(), Deadline.after(10))
    assert caught.value.code == "provider_bad_response"
    assert not any(r.url.host == "evil.example.com" for r in bfl.requests)


def test_allowed_urls() -> None:
    prov = provider(Bfl(), base_url="http://127.0.0.1:8080/v1")[0]
    assert prov.allowed_url("http://127.0.0.1:8080/v1/get_result?id=1")
    assert prov.allowed_url("https://api.us1.bfl.ai/v1/get_result?id=1")
    assert prov.allowed_url("https://bfldeliverysc.blob.core.windows.net/results/x.png", delivery=True)
    assert not prov.allowed_url("https://bfldeliverysc.blob.core.windows.net/results/x.png")
    assert not prov.allowed_url("http://127.0.0.1:8081/v1/get_result?id=1")


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"polling_url": "https://api.bfl.ai/v1/get_result?id=t"}),
        httpx.Response(200, text="<html>"),
    ],
)
def test_a_malformed_submit_answer(answer: httpx.Response) -> None:
    with pytest.raises(errors.ProviderError) as caught:
        provider(Bfl(submit=lambda request: answer))[0].generate(make_plan(), Deadline.after(10))
    assert caught.value.code == "provider_bad_response"


@pytest.mark.parametrize("answer", [{"status": "Ready", "result": None}, {"result": {}}, {"status": 3}])
def test_a_malformed_poll_answer(answer: dict[str, Any]) -> None:
    with pytest.raises(errors.ProviderError) as caught:
        provider(Bfl([answer]))[0].generate(make_plan(), Deadline.after(10))
    assert caught.value.code == "provider_bad_response"


def test_a_failed_download_is_a_bad_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host.startswith("delivery"):
            return httpx.Response(403, text="<Error>AuthenticationFailed</Error>")
        return Bfl([{"status": "Ready"}])(request)

    with pytest.raises(errors.ProviderError) as caught:
        provider(handler)[0].generate(make_plan(), Deadline.after(10))
    assert caught.value.code == "provider_bad_response"


def test_edits_are_not_made() -> None:
    edit = make_plan().model_copy(update={"operation": "edit"})
    with pytest.raises(errors.ProviderError) as caught:
        provider(Bfl())[0].generate(edit, Deadline.after(10))
    assert caught.value.code == "unsupported_operation"


def test_a_result_larger_than_any_image_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("imagegen.providers.bfl.MAX_IMAGE_BYTES", 10)
    with pytest.raises(errors.ProviderError) as caught:
        provider(Bfl([{"status": "Ready"}]))[0].generate(make_plan(), Deadline.after(10))
    assert caught.value.code == "provider_bad_response" and "larger" in caught.value.message
