"""The playground page (GET /) in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against the local stack, or a deployment with E2E_BASE_URL. A missing browser fails the tests:
CI installs it (.ci/run). A screenshot after a generation is written to artifacts/playground.png.

Partial images (``stream: true``) run against stacks of their own, also with E2E_BASE_URL set: the streaming stack
of tests/e2e/test_streaming_e2e.py (the API function under its streaming runtime, its OpenAI models served by the
fake OpenAI, which can space its events out), and a buffered one (the template's default) for the fallback."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devtools.local import LocalStack
from imagegen.auth import key_fingerprint
from imagegen.streaming import iter_sse, split_lines
from tests.e2e import test_routing_e2e, test_streaming_e2e
from tests.e2e.conftest import own_stack

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
INSTALL_HINT = "install it with: apt-get update && apt-get install -y chromium chromium-driver (.ci/run does this)"
WAIT_SECONDS = 60


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module, with a fresh profile directory, its console log captured."""
    for name, path in (("Chromium", CHROMIUM), ("ChromeDriver", CHROMEDRIVER)):
        if shutil.which(path) is None:
            pytest.fail(f"{name} not found at {path}: {INSTALL_HINT}", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: make dev (it is in the dev extras)", pytrace=False)
    profile = tempfile.mkdtemp(prefix="playground-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never tries to download a driver or a browser.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, condition: Callable[[], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(lambda _: condition(), message=f"timed out waiting for {what}")


def js(driver: WebDriver, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def open_page(driver: WebDriver, base_url: str) -> None:
    """Load the playground afresh and wait until the model list has filled the form."""
    driver.get(f"{base_url}/")
    driver.get_log("browser")  # start each test's console log empty
    wait_for(
        driver,
        lambda: js(driver, "return !document.getElementById('model').disabled && document.getElementById('size').options.length > 0"),
        "the model list to load",
    )


def fill_form(driver: WebDriver, *, prompt: str, **choices: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    for name, value in choices.items():
        element = driver.find_element(By.ID, name)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)


def submit(driver: WebDriver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "generate").click()


def images(driver: WebDriver) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = js(
        driver,
        """return [...document.querySelectorAll('#gallery img')].map((img) => ({
             src: img.currentSrc, loaded: img.dataset.loaded ?? null, complete: img.complete,
             naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight, format: img.dataset.format}));""",
    )
    return result


def wait_for_images(driver: WebDriver, count: int) -> list[dict[str, Any]]:
    def settled() -> list[dict[str, Any]] | None:
        shown = images(driver)
        return shown if len(shown) == count and all(image["loaded"] for image in shown) else None

    shown: list[dict[str, Any]] = wait_for(driver, settled, f"{count} image(s) to load")
    return shown


def policy_problems(driver: WebDriver) -> list[str]:
    """Console lines that mean the page broke its own CSP, Trusted Types, or threw."""
    words = ("content security policy", "trusted type", "uncaught", "refused to")
    return [entry["message"] for entry in driver.get_log("browser") if any(word in entry["message"].lower() for word in words)]


def save_screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"could not write {path}"
    return path


def test_page_is_html_with_a_strict_content_security_policy(local_stack) -> None:
    response = httpx.get(f"{local_stack.base_url}/", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-content-type-options"] == "nosniff"
    directives = [directive.split() for directive in response.headers["content-security-policy"].split(";")]
    policy = {name: values for name, *values in directives}
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    for directive in ("script-src", "style-src"):
        (source,) = policy[directive]
        assert source.startswith("'sha256-"), f"{directive} must allow the inlined code by hash only: {source}"
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    assert policy["require-trusted-types-for"] == ["'script'"]
    # b64_json answers are data: URIs; url answers come from the origin of the presigned URLs, and only from it.
    assert policy["img-src"][0] == "data:" and len(policy["img-src"]) == 2
    answer = httpx.post(f"{local_stack.base_url}/v1/images/generations", json={"prompt": "csp", "size": "256x256"}, timeout=60)
    url = httpx.URL(answer.json()["data"][0]["url"])
    assert policy["img-src"][1] == f"{url.scheme}://{url.netloc.decode()}"


def test_form_offers_what_the_model_allows(browser, local_stack) -> None:
    open_page(browser, local_stack.base_url)
    models = httpx.get(f"{local_stack.base_url}/v1/models", timeout=30).json()["data"]
    chosen = js(browser, "return document.getElementById('model').value")
    model = next(card for card in models if card["id"] == chosen)
    assert model["default"]
    caps = model["capabilities"]
    options = js(
        browser,
        """const values = (id) => [...document.getElementById(id).options].map((o) => o.value).filter((v) => v && v !== '__custom__');
           return {size: values('size'), quality: values('quality'), style: values('style'),
                   response_format: values('response_format'), size_value: document.getElementById('size').value,
                   format_value: document.getElementById('response_format').value, n_max: document.getElementById('n').max};""",
    )
    assert options["size"] == caps["sizes"] and options["size_value"] == caps["default_size"]
    assert options["quality"] == caps["qualities"] and options["style"] == caps["styles"]
    assert options["response_format"] == caps["response_formats"] and options["format_value"] == caps["default_response_format"]
    assert int(options["n_max"]) == caps["max_n"]
    assert policy_problems(browser) == []


@pytest.mark.parametrize(
    ("response_format", "size", "n"),
    [("url", "512x512", 2), ("b64_json", "256x256", 1)],
)
def test_generates_and_shows_images_in_each_response_format(browser, local_stack, response_format, size, n) -> None:
    width, height = (int(side) for side in size.split("x"))
    open_page(browser, local_stack.base_url)
    fill_form(browser, prompt=f"a lighthouse at dawn ({response_format})", size=size, n=str(n), response_format=response_format)
    submit(browser)
    shown = wait_for_images(browser, n)

    for image in shown:
        assert image["loaded"] == "true", image
        assert image["complete"] and (image["naturalWidth"], image["naturalHeight"]) == (width, height), image
        assert image["format"] == response_format
        if response_format == "url":
            assert image["src"].startswith(("http://", "https://")) and "X-Amz-Signature=" in image["src"]
        else:
            assert image["src"].startswith("data:image/png;base64,")
    status = js(browser, "return document.getElementById('status').textContent")
    assert f"{n} image" in status and float(js(browser, "return document.getElementById('status').dataset.seconds")) > 0

    # The request to copy is the one just sent, as curl and as openai-python.
    curl = js(browser, "return document.querySelector('#snippet-curl code').textContent")
    python = js(browser, "return document.querySelector('#snippet-python code').textContent")
    assert f"{local_stack.base_url}/v1/images/generations" in curl
    assert f'"response_format":"{response_format}"' in curl and f'"size":"{size}"' in curl
    assert f'base_url="{local_stack.base_url}/v1"' in python
    assert f'response_format="{response_format}"' in python and f"n={n}," in python

    path = save_screenshot(browser, f"playground-{response_format}.png")
    if response_format == "url":
        shutil.copyfile(path, ARTIFACTS / "playground.png")
    assert policy_problems(browser) == []


def test_validation_error_is_shown_next_to_the_field_it_names(browser, local_stack) -> None:
    expected = httpx.post(f"{local_stack.base_url}/v1/images/generations", json={"prompt": "   ", "model": "local"}, timeout=30)
    assert expected.status_code == 400
    error = expected.json()["error"]
    assert error["param"] == "prompt"

    open_page(browser, local_stack.base_url)
    fill_form(browser, prompt="   ", size="256x256")
    submit(browser)
    shown = wait_for(
        browser,
        lambda: js(
            browser,
            """const error = document.querySelector('.field[data-param="prompt"] .error');
               return error.hidden ? null : {text: error.textContent,
                 invalid: document.getElementById('prompt').getAttribute('aria-invalid'),
                 general: document.getElementById('form-error').hidden,
                 others: [...document.querySelectorAll('.field:not([data-param="prompt"]) .error')].filter((e) => !e.hidden).length};""",
        ),
        "the prompt's error message",
    )
    assert shown == {"text": error["message"], "invalid": "true", "general": True, "others": 0}
    assert images(browser) == []

    # Editing the field clears its error; the next good request shows images.
    fill_form(browser, prompt="a red fox")
    assert js(browser, """return document.querySelector('.field[data-param="prompt"] .error').hidden""")
    submit(browser)
    wait_for_images(browser, 1)
    assert policy_problems(browser) == []


def test_api_key_stays_in_the_tab_and_is_sent_as_a_bearer_token(browser, local_stack) -> None:
    open_page(browser, local_stack.base_url)
    fill_form(browser, prompt="a key test", size="256x256", **{"api-key": "sk-playground-test"})
    assert js(browser, "return sessionStorage.getItem('imagegen.apiKey')") == "sk-playground-test"
    assert js(browser, "return localStorage.length") == 0
    js(
        browser,
        """window.__sent = [];
           const original = window.fetch;
           window.fetch = (url, init = {}) => {
             window.__sent.push({url: String(url), headers: init.headers ?? {}});
             return original(url, init);
           };""",
    )
    submit(browser)
    wait_for_images(browser, 1)
    sent = js(browser, "return window.__sent")
    # The generation, and the usage reads (when the key changed and after the generation), all with the key.
    assert {request["headers"].get("Authorization") for request in sent} == {"Bearer sk-playground-test"}
    assert [request["url"] for request in sent if request["url"].endswith("/v1/images/generations")] == [
        f"{local_stack.base_url}/v1/images/generations"
    ]
    # The snippets name an environment variable; the key itself never appears on the page.
    curl = js(browser, "return document.querySelector('#snippet-curl code').textContent")
    python = js(browser, "return document.querySelector('#snippet-python code').textContent")
    assert '-H "Authorization: Bearer $IMAGEGEN_API_KEY"' in curl and 'api_key=os.environ["IMAGEGEN_API_KEY"]' in python
    assert "sk-playground-test" not in js(browser, "return document.body.innerText")

    # A new load of the page in the same tab keeps the key; the model list is fetched with it too.
    open_page(browser, local_stack.base_url)
    assert js(browser, "return document.getElementById('api-key').value") == "sk-playground-test"
    js(browser, "sessionStorage.clear()")
    assert policy_problems(browser) == []


def test_snippet_python_runs_against_the_api(browser, local_stack) -> None:
    """The openai-python snippet the page shows is a working program (url format: it prints the URLs)."""
    open_page(browser, local_stack.base_url)
    fill_form(browser, prompt='it\'s a "quoted" fox', size="256x256")
    python = js(browser, "return document.querySelector('#snippet-python code').textContent")
    namespace: dict[str, Any] = {}
    exec(compile(python, "<playground snippet>", "exec"), namespace)  # noqa: S102 - the page's own snippet, on loopback
    result = namespace["result"]
    assert len(result.data) == 1 and result.data[0].url.startswith(("http://", "https://"))
    # The curl snippet's shell quoting survives the same prompt.
    words = shlex.split(js(browser, "return document.querySelector('#snippet-curl code').textContent"))
    assert json.loads(words[words.index("-d") + 1])["prompt"] == 'it\'s a "quoted" fox'


def card(model_id: str, owned_by: str = "openai", **capabilities: Any) -> dict[str, Any]:
    base = {
        "custom_sizes": None,
        "default_size": "1024x1024",
        "max_n": 10,
        "max_prompt_chars": 32000,
        "styles": [],
        "response_formats": ["url", "b64_json"],
        "default_response_format": "b64_json",
        "output_formats": ["png"],
    }
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owned_by, "default": False, "capabilities": base | capabilities}


# Cards as GET /v1/models shows them with OpenAI and Azure configured (the local stack serves only `local`). OpenAI
# retired DALL-E 3 on 2026-05-12; an Azure deployment of it is still served, and it is the one model with n fixed at 1.
OPENAI_CARDS = [
    card(
        "azure/dall-e-3",
        owned_by="azure",
        sizes=["1024x1024", "1792x1024", "1024x1792"],
        max_n=1,
        max_prompt_chars=4000,
        qualities=["standard", "hd"],
        styles=["vivid", "natural"],
        response_formats=["url", "b64_json"],
        default_response_format="url",
    ),
    card(
        "gpt-image-2",
        sizes=["1024x1024", "1536x1024", "1024x1536", "auto"],
        custom_sizes="WxH: multiples of 16, longer side <= 3840, aspect <= 3:1",
        qualities=["low", "medium", "high", "auto", "standard", "hd"],
        output_formats=["png", "jpeg", "webp"],
    ),
    card("us.stability.stable-image-inpaint-v1:0", owned_by="bedrock", sizes=["1024x1024"], max_n=1, generations=False),
]


@pytest.fixture
def more_models(browser: WebDriver) -> Iterator[None]:
    """Pages loaded meanwhile see OPENAI_CARDS appended to the real GET v1/models answer (a script CDP adds before
    the page's own runs); generation still goes to the real API."""
    stub = f"""
        const extra = {json.dumps(OPENAI_CARDS)};
        const original = window.fetch;
        window.fetch = async (url, init) => {{
          const response = await original(url, init);
          if (!String(url).endsWith("/v1/models") || !response.ok) return response;
          const body = await response.json();
          body.data.push(...extra);
          return new Response(JSON.stringify(body), {{status: 200, headers: {{"content-type": "application/json"}}}});
        }};"""
    added = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": stub})
    try:
        yield
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]})


def form_state(driver: WebDriver) -> dict[str, Any]:
    state: dict[str, Any] = js(
        driver,
        """const values = (id) => [...document.getElementById(id).options].map((o) => o.value).filter((v) => v);
           const shown = (id) => !document.getElementById(id).closest('.field').hidden;
           const el = (id) => document.getElementById(id);
           return {sizes: values('size'), size: el('size').value, n: el('n').value, n_disabled: el('n').disabled,
                   qualities: shown('quality') ? values('quality') : null, styles: shown('style') ? values('style') : null,
                   formats: values('response_format'), format: el('response_format').value,
                   format_disabled: el('response_format').disabled,
                   output_formats: shown('output_format') ? values('output_format') : null,
                   custom_size_shown: !el('custom-size').hidden, count: el('prompt-count').textContent};""",
    )
    return state


def test_a_model_that_only_edits_is_not_offered(browser, local_stack, more_models) -> None:
    open_page(browser, local_stack.base_url)
    offered = js(browser, "return [...document.getElementById('model').options].map((o) => o.value)")
    assert {"local", "azure/dall-e-3", "gpt-image-2"} <= set(offered)
    assert "us.stability.stable-image-inpaint-v1:0" not in offered


def test_options_follow_the_chosen_model(browser, local_stack, more_models) -> None:
    open_page(browser, local_stack.base_url)
    fill_form(browser, prompt="a red fox", n="3", response_format="url", model="azure/dall-e-3")
    assert form_state(browser) == {
        "sizes": ["1024x1024", "1792x1024", "1024x1792"],
        "size": "1024x1024",
        "n": "1",
        "n_disabled": True,
        "qualities": ["standard", "hd"],
        "styles": ["vivid", "natural"],
        "formats": ["url", "b64_json"],
        "format": "url",
        "format_disabled": False,
        "output_formats": None,
        "custom_size_shown": False,
        "count": "9 / 4000",
    }

    fill_form(browser, prompt="a red fox", model="gpt-image-2", size="__custom__")
    state = form_state(browser)
    assert state["sizes"] == ["1024x1024", "1536x1024", "1024x1536", "auto", "__custom__"]
    # Every model serves url (the images are in S3 anyway): the caller's choice of url is kept
    assert (state["formats"], state["format"], state["format_disabled"]) == (["url", "b64_json"], "url", False)
    assert state["styles"] is None and state["output_formats"] == ["png", "jpeg", "webp"]
    assert state["custom_size_shown"] and not state["n_disabled"]
    fill_form(browser, prompt="a red fox", **{"custom-size": "1280x720", "output_format": "webp"})
    curl = js(browser, "return document.querySelector('#snippet-curl code').textContent")
    assert '"size":"1280x720"' in curl and '"output_format":"webp"' in curl and '"style"' not in curl

    # The local stack does not serve gpt-image-2: the API's 404 names the model field, and the page shows it there.
    expected = httpx.post(
        f"{local_stack.base_url}/v1/images/generations", json={"prompt": "a red fox", "model": "gpt-image-2"}, timeout=30
    ).json()["error"]
    submit(browser)
    message = wait_for(
        browser,
        lambda: js(
            browser, """const e = document.querySelector('.field[data-param="model"] .error'); return e.hidden ? null : e.textContent"""
        ),
        "the model's error message",
    )
    assert expected["param"] == "model" and message == expected["message"]
    assert policy_problems(browser) == []


# --- partial images: stream: true, read as it arrives ---

# Installed on a loaded page: every image the gallery loads (in order, with the page's clock), every value each of
# its <img> elements is given as src (a MutationObserver's old values plus the current one), and each generation
# request's body as the page received it, chunk by chunk (a tee of the response the page reads).
RECORDER = """
window.__loads = [];
window.__imgs = [];
window.__olds = [];
window.__streams = [];
const gallery = document.getElementById('gallery');
const idOf = (img) => { let id = window.__imgs.indexOf(img); if (id === -1) id = window.__imgs.push(img) - 1; return id; };
document.addEventListener('load', (event) => {
  const img = event.target;
  if (!(img instanceof HTMLImageElement) || !gallery.contains(img)) return;
  window.__loads.push({t: performance.now(), id: idOf(img), src: img.currentSrc, stage: img.dataset.stage ?? null,
                       partial: img.dataset.partialIndex ?? null, width: img.naturalWidth});
}, true);
new MutationObserver((records) => {
  for (const record of records) {
    if (record.type === 'childList') for (const node of record.addedNodes) node.querySelectorAll?.('img').forEach(idOf);
    else if (record.target instanceof HTMLImageElement) window.__olds.push({id: idOf(record.target), old: record.oldValue});
  }
}).observe(gallery, {subtree: true, childList: true, attributes: true, attributeFilter: ['src'], attributeOldValue: true});
const original = window.fetch;
window.fetch = async (url, init = {}) => {
  const response = await original(url, init);
  if (!String(url).endsWith('/v1/images/generations')) return response;
  const entry = {request: JSON.parse(init.body), status: response.status, chunks: [], done: false};
  window.__streams.push(entry);
  const [mine, theirs] = response.body.tee();
  (async () => {
    const reader = mine.pipeThrough(new TextDecoderStream()).getReader();
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      entry.chunks.push({t: performance.now(), text: read.value});
    }
    entry.done = true;
  })();
  return new Response(window.__rechunk ? rechunked(theirs) : theirs,
                      {status: response.status, statusText: response.statusText, headers: response.headers});
};
// window.__rechunk: the page reads the body in 7-byte chunks with CRLF line ends (SSE allows CRLF, LF or CR), so
// events, lines and CRLFs are split at every offset.
const rechunked = (body) => {
  const reader = body.getReader();
  const crlf = (bytes) => new TextEncoder().encode(new TextDecoder().decode(bytes).replaceAll('\\n', '\\r\\n'));
  let pending = new Uint8Array(0);
  return new ReadableStream({
    async pull(controller) {
      while (pending.length < 7) {
        const read = await reader.read();
        if (read.done) break;
        const more = crlf(read.value);
        const joined = new Uint8Array(pending.length + more.length);
        joined.set(pending);
        joined.set(more, pending.length);
        pending = joined;
      }
      if (pending.length === 0) return controller.close();
      controller.enqueue(pending.slice(0, 7));
      window.__rechunked.push(new TextDecoder().decode(pending.slice(0, 7)));
      pending = pending.slice(7);
    },
  });
};
"""


def record(driver: WebDriver) -> None:
    js(driver, RECORDER)


def recorded(driver: WebDriver) -> dict[str, Any]:
    """What RECORDER saw: ``loads``, ``sources`` (each <img>'s src values in the order they were set) and
    ``streams`` (request, status, chunks, done)."""
    seen: dict[str, Any] = js(
        driver,
        """return {loads: window.__loads, olds: window.__olds, streams: window.__streams,
                   current: window.__imgs.map((img) => img.getAttribute('src'))};""",
    )
    sources: list[list[str]] = [[] for _ in seen["current"]]
    for change in seen["olds"]:
        if change["old"] is not None:
            sources[change["id"]].append(change["old"])
    for img_id, current in enumerate(seen["current"]):
        sources[img_id].append(current)
    return {"loads": seen["loads"], "sources": sources, "streams": seen["streams"]}


def events_of(stream: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """The SSE events of a recorded body, parsed by the API's own SSE reader (imagegen.streaming)."""
    body = "".join(chunk["text"] for chunk in stream["chunks"]).encode()
    return [(name, json.loads(data)) for name, data in iter_sse(split_lines([body]))]


def arrived(stream: dict[str, Any], number: int) -> float:
    """The page's time at which the chunk holding the start of the body's ``number``-th event (from 0) arrived
    (the API writes an ``event:`` line first in each)."""
    starts = [match.start() for match in re.finditer(r"^event:", "".join(chunk["text"] for chunk in stream["chunks"]), re.MULTILINE)]
    offset, position = 0, starts[number]
    for chunk in stream["chunks"]:
        offset += len(chunk["text"])
        if offset > position:
            return float(chunk["t"])
    raise AssertionError(f"event {number} is not in the stream")


def data_uri(b64_json: str) -> str:
    return f"data:image/png;base64,{b64_json}"


def stream_done(driver: WebDriver) -> dict[str, Any]:
    """Wait for the generation to end (the button back, the recorded body complete); what RECORDER saw."""
    wait_for(
        driver,
        lambda: js(
            driver,
            "return window.__streams.length > 0 && window.__streams.every((s) => s.done) && !document.getElementById('generate').disabled",
        ),
        "the streamed generation to end",
    )
    return recorded(driver)


def final_images(driver: WebDriver, count: int) -> list[dict[str, Any]]:
    def settled() -> list[dict[str, Any]] | None:
        shown: list[dict[str, Any]] = js(
            driver,
            """return [...document.querySelectorAll('#gallery img')].map((img) => ({src: img.getAttribute('src'),
                 stage: img.dataset.stage ?? null, loaded: img.dataset.loaded ?? null, width: img.naturalWidth,
                 height: img.naturalHeight, link: img.closest('figure').querySelector('a').href,
                 caption: img.closest('figure').querySelector('figcaption').textContent}));""",
        )
        done = len(shown) == count and all(image["stage"] == "final" and image["loaded"] for image in shown)
        return shown if done else None

    shown: list[dict[str, Any]] = wait_for(driver, settled, f"{count} final image(s) to load")
    return shown


def snippets(driver: WebDriver) -> tuple[str, str]:
    return (
        js(driver, "return document.querySelector('#snippet-curl code').textContent"),
        js(driver, "return document.querySelector('#snippet-python code').textContent"),
    )


# The streaming stack (its OpenAI models served by the fake OpenAI) is test_streaming_e2e's, started for this module.
fake_openai = test_streaming_e2e.fake_openai
stream_stack = test_streaming_e2e.stream_stack
FAKE_MODEL = test_streaming_e2e.FAKE_MODEL
SLOW = 0.5  # the fake OpenAI's wait before each event (prompt slow-partials:0.5)


def test_partial_images_are_shown_as_they_arrive_then_the_final(browser, stream_stack) -> None:
    """The fake sends each event 0.5 s after the last: each partial image is loaded and on the page before the next
    event has arrived, and the completed image replaces it in the same figure."""
    open_page(browser, stream_stack.base_url)
    record(browser)
    fill_form(browser, prompt="slow-partials:0.5:a lighthouse at dawn", model=FAKE_MODEL, size="1024x1024", partial_images="2")
    curl, python = snippets(browser)
    assert '"stream":true,"partial_images":2' in curl and curl.startswith("curl -sN ")
    assert "    stream=True,\n    partial_images=2,\n" in python
    submit(browser)
    (final,) = final_images(browser, 1)
    seen = stream_done(browser)

    (stream,) = seen["streams"]
    assert stream["request"]["stream"] is True and stream["request"]["partial_images"] == 2 and stream["status"] == 200
    events = events_of(stream)
    assert [name for name, _ in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [data.get("partial_image_index") for _, data in events] == [0, 1, None]
    partials, completed = [data for _, data in events[:2]], events[2][1]
    # One figure: both partials, then the completed image, each loaded in turn, nothing else.
    assert seen["sources"] == [[data_uri(data["b64_json"]) for _, data in events]]
    loads = seen["loads"]
    assert [(load["stage"], load["partial"], load["src"]) for load in loads] == [
        ("partial", "0", data_uri(partials[0]["b64_json"])),
        ("partial", "1", data_uri(partials[1]["b64_json"])),
        ("final", None, data_uri(completed["b64_json"])),
    ]
    # Shown as they came: each partial was on the page before the next event arrived, for most of the fake's pause.
    assert loads[0]["t"] < arrived(stream, 1) and loads[1]["t"] < arrived(stream, 2) <= loads[2]["t"]
    completed_at = arrived(stream, 2)
    assert loads[1]["t"] - loads[0]["t"] > SLOW * 1000 / 2 and completed_at - loads[1]["t"] > SLOW * 1000 / 2

    # The final image is the completed event's, and its url serves the same bytes.
    assert final["src"] == data_uri(completed["b64_json"]) and (final["width"], final["height"]) == (1024, 1024)
    assert final["link"] == completed["url"]
    assert httpx.get(completed["url"], timeout=30).content == base64.b64decode(completed["b64_json"])
    status = js(browser, "return document.getElementById('status').textContent")
    assert f"1 image from {FAKE_MODEL} (streamed with 2 partial images) in " in status
    save_screenshot(browser, "playground-stream.png")
    assert policy_problems(browser) == []


def test_local_partials_then_every_image_and_the_snippets_stream_too(browser, stream_stack, tmp_path, monkeypatch) -> None:
    """The local model's coarse-to-fine partials (of the first image) arrive at once: each is still put on the page,
    in order, before the completed images; the Python snippet streams the same images."""
    open_page(browser, stream_stack.base_url)
    record(browser)
    fill_form(browser, prompt="a red fox in the snow", model="local", size="256x256", n="2", response_format="url", partial_images="2")
    curl, python = snippets(browser)
    submit(browser)
    shown = final_images(browser, 2)
    seen = stream_done(browser)
    (stream,) = seen["streams"]
    events = [data for _, data in events_of(stream)]
    assert [data["type"] for data in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"] * 2
    partials, completed = events[:2], events[2:]
    assert len({data["b64_json"] for data in events}) == 4  # coarse to fine: no partial is the final image
    assert seen["sources"] == [
        [data_uri(partials[0]["b64_json"]), data_uri(partials[1]["b64_json"]), data_uri(completed[0]["b64_json"])],
        [data_uri(completed[1]["b64_json"])],
    ]
    for image, data in zip(shown, completed, strict=True):
        assert image["src"] == data_uri(data["b64_json"]) and (image["width"], image["height"]) == (256, 256)
        assert image["link"] == data["url"] and "X-Amz-Signature=" in data["url"]
    assert "#1 · stream · 256×256" in shown[0]["caption"]

    # The snippets name the stream: curl's body is the request sent; the Python program streams the same images.
    words = shlex.split(curl)
    assert words[:2] == ["curl", "-sN"] and json.loads(words[words.index("-d") + 1]) == stream["request"]
    monkeypatch.chdir(tmp_path)
    exec(compile(python, "<playground snippet>", "exec"), {})  # noqa: S102 - the page's own snippet, on loopback
    assert sorted(path.name for path in tmp_path.iterdir()) == ["image-0.png", "image-1.png", "partial-0.png", "partial-1.png"]
    assert (tmp_path / "partial-0.png").read_bytes() == base64.b64decode(partials[0]["b64_json"])
    assert (tmp_path / "image-1.png").read_bytes() == base64.b64decode(completed[1]["b64_json"])
    assert policy_problems(browser) == []


def test_events_split_anywhere_with_crlf_line_ends_are_read_alike(browser, stream_stack) -> None:
    """The page's SSE reader against the real stream re-cut into 7-byte chunks with CRLF line ends: the same images,
    in the same order (the recorder keeps the body as the API sent it)."""
    open_page(browser, stream_stack.base_url)
    record(browser)
    js(browser, "window.__rechunk = true; window.__rechunked = []")
    fill_form(browser, prompt="a heron at dusk", model="local", size="256x256", response_format="b64_json", partial_images="3")
    submit(browser)
    (final,) = final_images(browser, 1)
    seen = stream_done(browser)
    (stream,) = seen["streams"]
    events = [data for _, data in events_of(stream)]
    assert [data["type"] for data in events] == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    pieces = js(browser, "return window.__rechunked")
    body = "".join(chunk["text"] for chunk in stream["chunks"])
    assert "".join(pieces) == body.replace("\n", "\r\n") and max(map(len, pieces)) == 7
    assert any(piece.endswith("\r") for piece in pieces) and any(piece.startswith("\n") for piece in pieces)
    assert seen["sources"] == [[data_uri(data["b64_json"]) for data in events]]
    assert final["src"] == data_uri(events[-1]["b64_json"]) and final["link"] == events[-1]["url"]
    assert policy_problems(browser) == []


def test_an_error_event_mid_stream_is_shown_and_its_partial_removed(browser, stream_stack) -> None:
    open_page(browser, stream_stack.base_url)
    record(browser)
    fill_form(browser, prompt="fail:mid-stream", model=FAKE_MODEL, size="1024x1024", partial_images="2")
    submit(browser)
    seen = stream_done(browser)
    (stream,) = seen["streams"]
    events = events_of(stream)
    assert [name for name, _ in events] == ["image_generation.partial_image", "error"]
    (partial, error) = (data for _, data in events)
    # The partial was put on the page, then taken away with the failed stream; the error event's message is shown.
    assert seen["sources"] == [[data_uri(partial["b64_json"])]]
    assert js(browser, "return document.querySelectorAll('#gallery figure').length") == 0
    shown = js(browser, "const e = document.getElementById('form-error'); return e.hidden ? null : e.textContent")
    assert shown == error["error"]["message"]
    assert js(browser, "return document.getElementById('status').textContent").startswith("Failed mid-stream after ")
    assert policy_problems(browser) == []


@pytest.fixture(scope="module")
def buffered_stack(local_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The template's default API (no streaming runtime): the session's stack when it is one, else a stack of its own."""
    if isinstance(local_stack, LocalStack) and not local_stack.stream_api:
        yield local_stack
        return
    stack = own_stack(
        tmp_path_factory,
        "buffered-stack",
        workers=1,
        access_key=f"e2e-{secrets.token_hex(4)}",
        secret_key=secrets.token_urlsafe(24),
        async_jobs=False,
        stream_api=False,
    )
    with stack:
        yield stack


def test_a_deployment_that_cannot_stream_gets_the_same_request_without_it(browser, buffered_stack) -> None:
    refusal = httpx.post(
        f"{buffered_stack.base_url}/v1/images/generations",
        json={"prompt": "a red fox", "model": "local", "stream": True, "partial_images": 2},
        timeout=30,
    )
    assert refusal.status_code == 400
    error = refusal.json()["error"]
    assert (error["param"], error["code"]) == ("stream", "unsupported_parameter")

    open_page(browser, buffered_stack.base_url)
    record(browser)
    fill_form(browser, prompt="a red fox", model="local", size="256x256", response_format="url", partial_images="2")
    submit(browser)
    (image,) = wait_for_images(browser, 1)
    seen = stream_done(browser)
    asked = [stream["request"] for stream in seen["streams"]]
    assert [stream["status"] for stream in seen["streams"]] == [400, 200]
    assert asked[0] == asked[1] | {"stream": True, "partial_images": 2} and "stream" not in asked[1]
    assert image["loaded"] == "true" and image["format"] == "url" and "X-Amz-Signature=" in image["src"]
    # The control is off from now on, saying why; no error is shown; the snippets no longer stream.
    control = js(
        browser,
        """const c = document.getElementById('partial_images');
           return {value: c.value, disabled: c.disabled, hint: document.getElementById('partial-images-hint').textContent,
                   errors: [...document.querySelectorAll('.error')].filter((e) => !e.hidden).length};""",
    )
    assert control == {"value": "", "disabled": True, "hint": f"Not available here: {error['message']}", "errors": 0}
    curl, python = snippets(browser)
    assert '"stream"' not in curl and "stream=" not in python and curl.startswith("curl -s ")
    assert policy_problems(browser) == []


# --- this month's usage (GET v1/organization/usage/images) ---

PRICED_KEY, OTHER_KEY, ADMIN_KEY = (f"sk-playground-{name}-{secrets.token_hex(8)}" for name in ("priced", "other", "admin"))


@pytest.fixture(scope="module")
def usage_stack(fake_openai, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack that records usage (a usage table in moto, as a stack with jobs has), requires API keys, serves the
    fake OpenAI's models (priced by the token: a cost that is not 0) and lets ADMIN_KEY read every caller's usage."""
    stack = own_stack(
        tmp_path_factory,
        "usage-stack",
        workers=1,
        api_keys=[PRICED_KEY, OTHER_KEY, ADMIN_KEY],
        extra_env={
            "OPENAI_BASE_URL": fake_openai.base_url,
            "OPENAI_API_KEY": "sk-fake-playground-usage",
            "USAGE_ADMIN_KEYS": key_fingerprint(ADMIN_KEY),
        },
        stream_api=False,
    )
    with stack:
        yield stack


def month_start() -> int:
    now = datetime.now(UTC)
    return int(datetime(now.year, now.month, 1, tzinfo=UTC).timestamp())


def api_usage(stack: LocalStack, key: str, **params: str) -> dict[str, Any]:
    """This month's totals for ``key`` as the API answers them (every page), read here, not by the page."""
    query: dict[str, str] = {"start_time": str(month_start()), "bucket_width": "1d", "limit": "31", **params}
    totals: dict[str, Any] = {"images": 0, "requests": 0, "costs": []}
    while True:
        answer = httpx.get(
            f"{stack.base_url}/v1/organization/usage/images", params=query, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        for result in (result for bucket in page["data"] for result in bucket["results"]):
            totals["images"] += result["images"]
            totals["requests"] += result["num_model_requests"]
            totals["costs"].append(None if result["cost"] is None else result["cost"]["value"])
        if not page["has_more"]:
            return totals
        query["page"] = page["next_page"]


def usd_text(value: float) -> str:
    """What the page shows for ``value`` USD: cents from $1, up to 4 decimals below (at least 2)."""
    if 0 < value < 0.00005:
        return "< $0.0001"
    text = f"{value:,.{2 if value >= 1 else 4}f}"
    whole, fraction = text.split(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def open_page_with_key(driver: WebDriver, base_url: str, key: str) -> None:
    """The playground with ``key`` in the tab's sessionStorage of the page's origin before the page reads it."""
    driver.get(f"{base_url}/")
    js(driver, "sessionStorage.setItem('imagegen.apiKey', arguments[0])", key)
    open_page(driver, base_url)


def usage_panel(driver: WebDriver) -> dict[str, Any]:
    panel: dict[str, Any] = js(
        driver,
        """const el = (id) => document.getElementById(id);
           const panel = el('usage');
           return {state: panel.dataset.state ?? null, hidden: panel.hidden, images: panel.dataset.images ?? null,
                   requests: panel.dataset.requests ?? null, usd: panel.dataset.usd ?? null,
                   shown: {images: el('usage-images').textContent, requests: el('usage-requests').textContent,
                           cost: el('usage-cost').textContent},
                   totals_hidden: el('usage-totals').hidden, note: el('usage-note').hidden ? null : el('usage-note').textContent,
                   off: el('usage-off').hidden ? null : el('usage-off').textContent};""",
    )
    return panel


def wait_for_usage(driver: WebDriver, **expected: Any) -> dict[str, Any]:
    def matches() -> dict[str, Any] | None:
        panel = usage_panel(driver)
        return panel if all(panel[name] == value for name, value in expected.items()) else None

    panel: dict[str, Any] = wait_for(driver, matches, f"the usage panel to show {expected}")
    return panel


def test_usage_panel_asks_for_a_key_the_gateway_refuses(browser, usage_stack) -> None:
    browser.get(f"{usage_stack.base_url}/")
    js(browser, "sessionStorage.clear()")
    browser.get(f"{usage_stack.base_url}/")
    panel = wait_for_usage(browser, state="key")
    assert not panel["hidden"] and panel["totals_hidden"] and panel["images"] is None
    assert panel["note"].startswith("An API key is needed to read usage: enter an API key (401: ")

    js(browser, "sessionStorage.setItem('imagegen.apiKey', arguments[0])", "sk-playground-unknown")
    browser.get(f"{usage_stack.base_url}/")
    panel = wait_for_usage(browser, state="key")
    assert panel["note"] == "An API key is needed to read usage: this key may not read it (403: Incorrect API key provided.)."
    assert "sk-playground-unknown" not in js(browser, "return document.body.innerText")
    js(browser, "sessionStorage.clear()")


def test_usage_panel_counts_the_images_the_page_makes_and_their_cost(browser, usage_stack) -> None:
    open_page_with_key(browser, usage_stack.base_url, PRICED_KEY)
    # A key of its own: nothing yet this month.
    panel = wait_for_usage(browser, state="ok")
    assert (panel["images"], panel["requests"], panel["usd"]) == ("0", "0", "0") and panel["shown"]["cost"] == "$0.00"
    assert api_usage(usage_stack, PRICED_KEY)["images"] == 0

    made = 0
    for requests, n in enumerate((2, 1), start=1):
        fill_form(browser, prompt=f"a lighthouse, take {requests}", model=FAKE_MODEL, size="1024x1024", n=str(n), response_format="url")
        submit(browser)
        wait_for_images(browser, n)
        made += n
        panel = wait_for_usage(browser, state="ok", images=str(made), requests=str(requests))

    expected = api_usage(usage_stack, PRICED_KEY)
    assert (expected["images"], expected["requests"]) == (made, 2)
    assert None not in expected["costs"]
    cost = sum(expected["costs"])
    assert cost > 0, "the fake OpenAI reports tokens: the model's price makes a cost"
    assert float(panel["usd"]) == pytest.approx(cost, abs=1e-9)
    assert panel["shown"] == {"images": str(made), "requests": "2", "cost": usd_text(cost)}
    assert PRICED_KEY not in js(browser, "return document.body.innerText")
    save_screenshot(browser, "playground-usage.png")
    assert policy_problems(browser) == []
    js(browser, "sessionStorage.clear()")


def test_usage_panel_shows_an_admin_key_its_own_usage_only(browser, usage_stack) -> None:
    """ADMIN_KEY may read every caller's usage (USAGE_ADMIN_KEYS): the panel still shows this key's."""
    other = httpx.post(
        f"{usage_stack.base_url}/v1/images/generations",
        json={"prompt": "another caller's fox", "model": FAKE_MODEL, "size": "1024x1024"},
        headers={"Authorization": f"Bearer {OTHER_KEY}"},
        timeout=60,
    )
    assert other.status_code == 200, other.text
    open_page_with_key(browser, usage_stack.base_url, ADMIN_KEY)
    fill_form(browser, prompt="the admin's own heron", model=FAKE_MODEL, size="1024x1024", n="1", response_format="url")
    submit(browser)
    wait_for_images(browser, 1)
    panel = wait_for_usage(browser, state="ok", images="1")

    own = api_usage(usage_stack, ADMIN_KEY, api_key_ids=key_fingerprint(ADMIN_KEY))
    everyone = api_usage(usage_stack, ADMIN_KEY)
    assert own["images"] == 1 and everyone["images"] > own["images"]
    assert panel["requests"] == str(own["requests"]) and float(panel["usd"]) == pytest.approx(sum(own["costs"]), abs=1e-9)
    js(browser, "sessionStorage.clear()")


def test_usage_panel_follows_next_page_and_says_when_a_cost_is_unknown(browser, usage_stack) -> None:
    """The month in pages (a stub answers the usage reads: the real API gives a month in one page of 1d buckets),
    one result with no price: the counts are summed over every page, the cost is "unknown", not a partial sum."""
    pages = {
        None: {"data": [{"results": [{"images": 4, "num_model_requests": 2, "cost": {"value": 1000.004, "currency": "usd"}}]}],
               "has_more": True, "next_page": "p2"},
        "p2": {"data": [{"results": []}, {"results": [{"images": 3, "num_model_requests": 3, "cost": None}]}],
               "has_more": False, "next_page": None},
    }  # fmt: skip
    stub = f"""
        const pages = {json.dumps({key or "": value for key, value in pages.items()})};
        window.__usageReads = [];
        const original = window.fetch;
        window.fetch = async (url, init) => {{
          const parsed = new URL(String(url));
          if (!parsed.pathname.endsWith("/v1/organization/usage/images")) return original(url, init);
          window.__usageReads.push(parsed.search);
          const body = pages[parsed.searchParams.get("page") ?? ""];
          const headers = {{"content-type": "application/json"}};
          return new Response(JSON.stringify({{object: "page", ...body}}), {{status: 200, headers}});
        }};"""
    added = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": stub})
    try:
        open_page_with_key(browser, usage_stack.base_url, PRICED_KEY)
        panel = wait_for_usage(browser, state="ok", images="7")
        reads = [dict(httpx.QueryParams(search.lstrip("?"))) for search in js(browser, "return window.__usageReads")]
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]})
        js(browser, "sessionStorage.clear()")
    first = {"start_time": str(month_start()), "bucket_width": "1d", "limit": "31", "api_key_ids": key_fingerprint(PRICED_KEY)}
    assert reads == [first, first | {"page": "p2"}]
    assert (panel["requests"], panel["usd"]) == ("5", "unknown")
    assert panel["shown"] == {"images": "7", "requests": "5", "cost": "unknown"}
    assert usd_text(1000.004) == "$1,000.00" and usd_text(0.0061) == "$0.0061" and usd_text(0) == "$0.00"


def test_usage_panel_hides_itself_where_usage_is_not_recorded(browser, stream_stack) -> None:
    """The streaming stack has no jobs backend, so no usage table: the API's 404 usage_not_recorded."""
    answer = httpx.get(f"{stream_stack.base_url}/v1/organization/usage/images", params={"start_time": str(month_start())}, timeout=30)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "usage_not_recorded"

    open_page(browser, stream_stack.base_url)
    panel = wait_for_usage(browser, state="off")
    assert panel["hidden"] and panel["off"] == "This deployment does not record usage."
    assert js(browser, "return getComputedStyle(document.getElementById('usage')).display") == "none"
    # A generation still works, and the panel stays hidden: the page does not ask again.
    js(
        browser,
        """window.__urls = [];
           const original = window.fetch;
           window.fetch = (url, init) => { window.__urls.push(new URL(String(url)).pathname); return original(url, init); };""",
    )
    fill_form(browser, prompt="a red fox", model="local", size="256x256", response_format="url")
    submit(browser)
    wait_for_images(browser, 1)
    assert js(browser, "return window.__urls") == ["/v1/images/generations"]
    panel = usage_panel(browser)
    assert panel["hidden"] and panel["off"] == "This deployment does not record usage."
    assert policy_problems(browser) == []


# --- routes (the registry document's aliases for ordered lists of models) ---

route_openai = test_routing_e2e.route_openai
route_stack = test_routing_e2e.route_stack


def test_a_route_is_offered_with_its_models_and_the_status_names_the_model_that_served(browser, route_stack) -> None:
    open_page(browser, route_stack.base_url)
    labels = js(browser, "return [...document.getElementById('model').options].map((o) => o.textContent)")
    assert "fast (route: gpt-image-1-mini → local) (default)" in labels
    # The fake OpenAI answers this prompt with a 500: the route falls to local, and the page says local made it.
    fill_form(browser, prompt="fail:500", model="fast", size="1024x1024", response_format="url")
    submit(browser)
    wait_for_images(browser, 1)
    status = js(browser, "return document.getElementById('status').textContent")
    assert "1 image from local in" in status, status
