"""The playground page (GET /) in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against the local stack, or a deployment with E2E_BASE_URL. A missing browser fails the tests:
CI installs it (.ci/run). A screenshot after a generation is written to artifacts/playground.png."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

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
    assert [request["headers"].get("Authorization") for request in sent] == ["Bearer sk-playground-test"]
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
