"""The official openai npm package against the local stack (or a deployment with E2E_BASE_URL): one node process
(tests/e2e/js/sdk_e2e.mjs) type-checks itself against the package's declarations, makes every call, checks every
answer against the SDK's declared types at run time, and hands the images back here to be opened with Pillow. For
edits and variations it also hands back the PNGs it uploaded, so each output is checked pixel for pixel against the
local model's edit of the first of them (tests/e2e/test_edits_e2e.py holds that check).

The package and the TypeScript compiler come from tests/e2e/js/package-lock.json: `make test` (or `make test-e2e`)
runs `npm ci` there. A missing install fails these tests rather than skipping them."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from tests.e2e.test_edits_e2e import assert_edit_of
from tests.e2e.test_images_e2e import MODEL_EXTENSIONS, decode

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "sdk_e2e.mjs"
INSTALL_HINT = "install it with `make test-e2e` (npm ci in tests/e2e/js, from its package-lock.json)"
# The checks sdk_e2e.mjs runs
EXPECTED_CHECKS = (
    "generate_url",
    "generate_b64",
    "models_list",
    "error_bad_size",
    "error_unknown_model",
    "edit_multipart_b64_json",
    "edit_multipart_url",
    "edit_json",
    "variation",
    "error_mask_size",
)
# The script's uploads (edits and variations) are 64x48; the local model answers at the input's size
INPUT_SIZE = (64, 48)
# How many images each check hands back, at which size
EXPECTED_IMAGES = {
    "generate_url": (2, (512, 512)),
    "generate_b64": (1, (256, 256)),
    "edit_multipart_b64_json": (1, INPUT_SIZE),
    "edit_multipart_url": (1, INPUT_SIZE),
    "edit_json": (1, INPUT_SIZE),
    "variation": (2, INPUT_SIZE),
}
# What each edit or variation is of: the first image uploaded, and the mask (None: edited everywhere)
EDITED = {"edit_multipart_b64_json": "mask", "edit_multipart_url": "mask", "edit_json": None, "variation": None}


def pinned_sdk_version() -> str:
    return str(json.loads((JS_DIR / "package.json").read_text())["dependencies"]["openai"])


def run_node_client(base_url: str) -> dict[str, Any]:
    """Run the client script once against ``base_url`` (the API root, without /v1) and return its report."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node not found on PATH: the npm SDK's e2e tests need Node.js; {INSTALL_HINT}", pytrace=False)
    installed = JS_DIR / "node_modules" / "openai" / "package.json"
    if not installed.is_file():
        pytest.fail(f"the openai npm package is not installed in {JS_DIR}: {INSTALL_HINT}", pytrace=False)
    version = json.loads(installed.read_text())["version"]
    if version != pinned_sdk_version():
        pytest.fail(f"tests/e2e/js/node_modules has openai {version}, the lock pins {pinned_sdk_version()}: {INSTALL_HINT}", pytrace=False)
    env = {**os.environ, "IMAGEGEN_BASE_URL": f"{base_url}/v1"}
    result = subprocess.run([node, str(SCRIPT)], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=240, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode not in (0, 1) or not lines:
        pytest.fail(f"node {SCRIPT.name} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}", pytrace=False)
    report: dict[str, Any] = json.loads(lines[-1])
    report["returncode"] = result.returncode
    report["stderr"] = result.stderr
    return report


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


@pytest.fixture(scope="module")
def report(local_stack) -> dict[str, Any]:
    return run_node_client(local_stack.base_url)


def test_the_client_script_type_checks_against_the_pinned_sdk(report) -> None:
    assert report["sdk"] == pinned_sdk_version()
    assert report["typecheck"] == [], "\n".join(report["typecheck"])


@pytest.mark.parametrize("name", EXPECTED_CHECKS)
def test_each_call_answers_what_the_sdk_types_declare(report, name) -> None:
    checks = by_name(report)
    assert name in checks, f"sdk_e2e.mjs ran {sorted(checks)}"
    assert checks[name]["errors"] == []


def test_the_script_runs_exactly_the_expected_checks(report) -> None:
    assert tuple(by_name(report)) == EXPECTED_CHECKS
    assert report["returncode"] == 0, report["stderr"]


def test_images_are_pngs_of_the_requested_size(report) -> None:
    for check, (count, size) in EXPECTED_IMAGES.items():
        images = [image for image in report["images"] if image["check"] == check]
        assert len(images) == count, check
        for image in images:
            assert image["size"] == f"{size[0]}x{size[1]}"
            decoded = PILImage.open(io.BytesIO(base64.b64decode(image["base64"], validate=True)))
            decoded.load()
            assert (decoded.format, decoded.size) == ("PNG", size), check


def test_an_invalid_request_is_the_sdks_bad_request_error_naming_the_field(report) -> None:
    checks = by_name(report)
    assert (checks["error_bad_size"]["param"], checks["error_unknown_model"]["param"]) == ("size", "model")
    assert checks["error_mask_size"]["param"] == "mask"
    assert "64x49" in checks["error_mask_size"]["message"]


def inputs(report: dict[str, Any]) -> dict[str, bytes]:
    return {name: base64.b64decode(data, validate=True) for name, data in report["inputs"].items()}


def test_the_uploads_are_the_pngs_the_checks_assume(report) -> None:
    """Pillow reads what the script drew: two different images and a mask with an edit area and a kept area."""
    uploads = inputs(report)
    a, b, mask = (decode(uploads[name]) for name in ("a", "b", "mask"))
    assert {(image.format, image.size) for image in (a, b, mask)} == {("PNG", INPUT_SIZE)}
    assert a.tobytes() != b.tobytes()
    assert set(mask.getchannel("A").get_flattened_data()) == {0, 255}
    assert decode(uploads["mask_taller"]).size == (INPUT_SIZE[0], INPUT_SIZE[1] + 1)


@pytest.mark.parametrize("check", EDITED)
def test_edits_and_variations_are_the_first_upload_inverted_where_the_mask_is_transparent(report, check) -> None:
    uploads = inputs(report)
    mask = EDITED[check]
    images = [image for image in report["images"] if image["check"] == check]
    assert images, check
    for image in images:
        assert_edit_of(base64.b64decode(image["base64"], validate=True), uploads["a"], None if mask is None else uploads[mask])


def test_each_response_format_is_handed_back_as_asked(report) -> None:
    sources = {image["check"]: image["source"] for image in report["images"]}
    assert (sources["edit_multipart_b64_json"], sources["edit_multipart_url"], sources["edit_json"]) == ("b64_json", "url", "b64_json")


def test_models_list_reports_the_apis_extensions_as_extras(report) -> None:
    """What this API adds to each model is beyond the SDK's Model: seen, allowed, and nothing else undeclared."""
    models = by_name(report)["models_list"]
    assert "local" in models["ids"]
    assert {extra.rsplit(".", 1)[-1] for extra in models["extras"]} == MODEL_EXTENSIONS


# --- the checks themselves can fail: the same script against a server that answers wrong shapes -------------------

PNG_1x1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


class WrongAnswers(BaseHTTPRequestHandler):
    """Answers in the Images API's routes with what the SDK's types rule out."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/image.png"):
            data = base64.b64decode(PNG_1x1)
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        # owned_by missing, created a string
        self.answer(200, {"object": "list", "data": [{"id": "local", "object": "model", "created": "today"}]})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["content-length"]))
        if self.headers["content-type"].startswith("multipart/form-data"):
            self.answer_form(raw)
            return
        body = json.loads(raw)
        if "images" in body:  # the JSON edit: usage a string
            self.answer(200, {"created": 1, "data": [{"b64_json": PNG_1x1}], "usage": "lots"})
        elif body.get("size") == "640x480":  # a 400 without param
            self.answer(400, {"error": {"message": "bad size", "type": "invalid_request_error", "param": None, "code": None}})
        elif body.get("model") == "no-such-model":  # a 400 where the API answers 404
            self.answer(400, {"error": {"message": "no model", "type": "invalid_request_error", "param": "model", "code": None}})
        elif body.get("response_format") == "url":  # created a string, a url a number, a field the SDK does not know
            image_url = f"http://{self.headers['host']}/image.png"
            self.answer(200, {"created": "now", "data": [{"url": 5}, {"url": image_url}], "request_id": "x"})
        else:  # both url and b64_json, background outside its literals
            self.answer(200, {"created": 1, "background": "auto", "data": [{"b64_json": PNG_1x1, "url": "https://example.invalid/"}]})

    def answer_form(self, raw: bytes) -> None:
        if self.path.endswith("/images/variations"):  # no data at all (the SDK declares it optional)
            self.answer(200, {"created": 1})
        elif b'filename="mask_taller.png"' in raw:  # the mask-size refusal naming another field
            self.answer(400, {"error": {"message": "bad mask", "type": "invalid_request_error", "param": "image", "code": None}})
        else:  # an edit: b64_json a number
            self.answer(200, {"created": 1, "data": [{"b64_json": 7}]})


@pytest.fixture()
def wrong_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), WrongAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_checks_fail_on_answers_the_sdk_types_rule_out(wrong_server) -> None:
    wrong = run_node_client(wrong_server)
    assert wrong["returncode"] == 1
    errors = {name: "\n".join(check["errors"]) for name, check in by_name(wrong).items()}
    assert 'OpenAI.ImagesResponse.created: "now" is not number' in errors["generate_url"]
    assert "OpenAI.ImagesResponse.data[0].url: 5 is not string" in errors["generate_url"]
    assert "OpenAI.ImagesResponse.request_id: not a field of the SDK's ImagesResponse" in errors["generate_url"]
    assert "OpenAI.ImagesResponse.background: " in errors["generate_b64"]
    assert "has a url in a b64_json answer" in errors["generate_b64"]
    assert "OpenAI.Models.Model.owned_by: missing" in errors["models_list"]
    assert 'OpenAI.Models.Model.created: "today" is not number' in errors["models_list"]
    assert "error.param is null" in errors["error_bad_size"]
    assert "expected NotFoundError, got BadRequestError" in errors["error_unknown_model"]
    for edit in ("edit_multipart_b64_json", "edit_multipart_url"):
        assert "OpenAI.ImagesResponse.data[0].b64_json: 7 is not string" in errors[edit]
        assert "data[0] has neither a url nor b64_json" in errors[edit]
    assert "OpenAI.ImagesResponse.usage: " in errors["edit_json"]
    assert "n=2 answered 0 images" in errors["variation"]
    assert 'error.param is "image", expected "mask"' in errors["error_mask_size"]
