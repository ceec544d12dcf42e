"""functions/api/multipart.py: bodies as the official SDKs send them (the Python SDK through a mock transport, the npm SDK
run by node with a capturing fetch), hand-built edge cases of RFC 2046/7578 framing, every refusal, and the scalar
coercion the request models need."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pydantic
import pytest

from functions.api.multipart import FilePart, FormData, coerce_form_scalars, parse_form
from imagegen.errors import InvalidRequestError
from imagegen.options import ImageVariationOptions

JS_DIR = Path(__file__).resolve().parents[1] / "e2e" / "js"
# Every byte value, and the sequences a careless parser cuts on: CRLF, "--", a blank line, a boundary-like run.
BINARY = bytes(range(256)) + b"\r\n--\r\n\r\n--x--\r\n" + bytes(range(255, -1, -1))
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + BINARY


def invalid(body: bytes, content_type: str, **limits: int) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        parse_form(body, content_type, **limits)
    assert caught.value.code == "invalid_multipart"
    assert caught.value.status_code == 400
    return caught.value


def hand_built(parts: list[tuple[str, bytes]], boundary: str = "BOUNDARY", *, preamble: bytes = b"", epilogue: bytes = b"\r\n") -> bytes:
    """A body from (header block, content) pairs, framed exactly as RFC 2046 writes it."""
    dash = b"--" + boundary.encode()
    body = preamble + (b"\r\n" if preamble else b"")
    for headers, content in parts:
        body += dash + b"\r\n" + headers.encode() + b"\r\n\r\n" + content + b"\r\n"
    return body + dash + b"--" + epilogue


def text(name: str) -> str:
    return f'Content-Disposition: form-data; name="{name}"'


CT = "multipart/form-data; boundary=BOUNDARY"


# --- the Python SDK -------------------------------------------------------------------------------------------------


def sdk_requests(call: Callable[[openai.OpenAI], object]) -> list[tuple[str, bytes]]:
    """What the installed openai SDK sends for ``call``: its own request building, a mock transport in place of the network."""
    sent: list[tuple[str, bytes]] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append((request.headers["content-type"], request.read()))
        return httpx2.Response(200, json={"created": 0, "data": []})

    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://sdk.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )
    call(client)
    return sent


def test_python_sdk_edit_with_several_images_a_mask_and_nested_svg_options() -> None:
    ((content_type, body),) = sdk_requests(
        lambda client: client.images.edit(
            image=[("first.png", PNG, "image/png"), b"raw bytes"],
            mask=("mask.png", b"", "image/png"),
            prompt="a cat\r\n-- in a hat",
            n=2,
            stream=False,
            output_compression=50,
            svg={"model": "svg-author", "reasoning": {"effort": "high"}},
        )
    )
    assert content_type.startswith("multipart/form-data; boundary=")

    form = parse_form(body, content_type)

    assert form.fields == {
        "prompt": "a cat\r\n-- in a hat",
        "n": "2",
        "stream": "false",
        "output_compression": "50",
        "svg": {"model": "svg-author", "reasoning": {"effort": "high"}},
    }
    assert form.files == {
        "image": [
            FilePart(name="image[]", filename="first.png", content_type="image/png", data=PNG),
            FilePart(name="image[]", filename="upload", content_type="application/octet-stream", data=b"raw bytes"),
        ],
        "mask": [FilePart(name="mask", filename="mask.png", content_type="image/png", data=b"")],
    }


def test_python_sdk_edit_with_one_image_names_it_image() -> None:
    ((content_type, body),) = sdk_requests(lambda client: client.images.edit(image=("one.png", PNG, "image/png"), prompt="p"))

    form = parse_form(body, content_type)

    assert form.fields == {"prompt": "p"}
    assert form.files == {"image": [FilePart(name="image", filename="one.png", content_type="image/png", data=PNG)]}


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks create_variation deprecated; we serve it
def test_python_sdk_variation() -> None:
    ((content_type, body),) = sdk_requests(
        lambda client: client.images.create_variation(image=("v.png", PNG, "image/png"), n=3, response_format="b64_json", size="256x256")
    )

    form = parse_form(body, content_type)

    assert form.fields == {"n": "3", "response_format": "b64_json", "size": "256x256"}
    assert [(part.name, part.data) for part in form.files["image"]] == [("image", PNG)]


def test_python_sdk_filename_escapes_of_httpx_are_undone_for_quote_pairs_only() -> None:
    # httpx writes '"' as %22 and '\' as '\\': the backslash comes back, the %22 stays as sent.
    ((content_type, body),) = sdk_requests(lambda client: client.images.edit(image=('a"b\\c.png', PNG, "image/png"), prompt="p"))
    assert b'filename="a%22b\\\\c.png"' in body

    (part,) = parse_form(body, content_type).files["image"]

    assert part.filename == "a%22b\\c.png"


@pytest.mark.parametrize("request_class", [httpx.Request, httpx2.Request], ids=["httpx", "httpx2"])
def test_httpx_request_bodies(request_class: Any) -> None:
    # The SDK's call shape: data from _serialize_multipartform (lists for repeated keys), files as (name, tuple) pairs.
    request = request_class(
        "POST",
        "http://sdk.invalid/v1/images/edits",
        data={"prompt": "p", "tags[]": ["a", "b"], "user": "ü ✓"},
        files=[
            ("image[]", ("a.png", PNG, "image/png")),
            ("image[]", ("b.png", b"", "image/png")),
            ("markup", ("m.png", b"M", "image/png")),
        ],
    )

    form = parse_form(request.read(), request.headers["content-type"])

    assert form.fields == {"prompt": "p", "tags": ["a", "b"], "user": "ü ✓"}
    assert [(part.filename, part.data) for part in form.files["image"]] == [("a.png", PNG), ("b.png", b"")]
    assert form.files["markup"] == [FilePart(name="markup", filename="m.png", content_type="image/png", data=b"M")]


# --- the npm SDK ----------------------------------------------------------------------------------------------------

NODE_SCRIPT = r"""
import OpenAI, { toFile, toStreamingFile } from 'openai';
const png = Buffer.from(process.env.PNG_B64, 'base64');
const sent = [];
const client = new OpenAI({
  apiKey: 'sk-test', baseURL: 'http://sdk.invalid/v1', maxRetries: 0,
  fetch: async (url, init) => {
    const request = new Request(url, init);
    const body = Buffer.from(await request.arrayBuffer());
    if (String(url).includes('/images/')) {
      sent.push({ contentType: request.headers.get('content-type'), body: body.toString('base64') });
    }
    return new Response(JSON.stringify({ created: 0, data: [] }), { headers: { 'content-type': 'application/json' } });
  },
});
await client.images.edit({
  image: [await toFile(png, 'dir/first.png', { type: 'image/png' }), await toFile(Buffer.from('B'), 'b.png')],
  mask: await toFile(Buffer.alloc(0), 'mask.png', { type: 'image/png' }),
  prompt: 'a cat\r\n-- in a hat', n: 2, stream: false, output_compression: 50,
  svg: { model: 'svg-author', reasoning: { effort: 'high' } },
});
await client.images.edit({ image: await toFile(png, 'one.png', { type: 'image/png' }), prompt: 'p' });
await client.images.createVariation({ image: await toFile(png, 'v.png', { type: 'image/png' }), n: 3, response_format: 'b64_json' });
const chunks = (async function* () { yield png; })();
await client.images.edit({ image: [toStreamingFile(chunks, 'streamed.png', { type: 'image/png' })], prompt: 'p', n: 1 });
console.log(JSON.stringify(sent));
"""


@pytest.fixture(scope="module")
def npm_requests() -> list[tuple[str, bytes]]:
    """What the installed npm SDK sends (its own FormData building, serialized by Node's fetch), captured in-process by
    a custom fetch: no network."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "openai" / "package.json").is_file():
        pytest.skip("needs node and the npm SDK in tests/e2e/js/node_modules (make node-sdk); the npm naming is also checked by hand below")
    result = subprocess.run(
        [node, "--input-type=module", "-e", NODE_SCRIPT],
        cwd=JS_DIR,
        env={**os.environ, "PNG_B64": base64.b64encode(PNG).decode()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [(entry["contentType"], base64.b64decode(entry["body"])) for entry in json.loads(result.stdout)]


def test_npm_sdk_edit_with_several_images_a_mask_and_nested_svg_options(npm_requests: list[tuple[str, bytes]]) -> None:
    content_type, body = npm_requests[0]
    assert "boundary=----formdata-undici-" in content_type

    form = parse_form(body, content_type)

    assert form.fields == {
        "prompt": "a cat\r\n-- in a hat",
        "n": "2",
        "stream": "false",
        "output_compression": "50",
        "svg": {"model": "svg-author", "reasoning": {"effort": "high"}},
    }
    assert form.files == {
        "image": [
            FilePart(name="image[]", filename="first.png", content_type="image/png", data=PNG),
            FilePart(name="image[]", filename="b.png", content_type="application/octet-stream", data=b"B"),
        ],
        "mask": [FilePart(name="mask", filename="mask.png", content_type="image/png", data=b"")],
    }


def test_npm_sdk_edit_with_one_image_and_variation(npm_requests: list[tuple[str, bytes]]) -> None:
    edit, variation = (parse_form(body, content_type) for content_type, body in npm_requests[1:3])

    assert edit.fields == {"prompt": "p"}
    assert edit.files == {"image": [FilePart(name="image", filename="one.png", content_type="image/png", data=PNG)]}
    assert variation.fields == {"n": "3", "response_format": "b64_json"}
    assert [(part.name, part.data) for part in variation.files["image"]] == [("image", PNG)]


def test_npm_sdk_streaming_upload_encoder(npm_requests: list[tuple[str, bytes]]) -> None:
    content_type, body = npm_requests[3]
    assert "boundary=openai-" in content_type

    form = parse_form(body, content_type)

    assert form.fields == {"prompt": "p", "n": "1"}
    assert form.files == {"image": [FilePart(name="image[]", filename="streamed.png", content_type="image/png", data=PNG)]}


def test_npm_naming_reproduced_by_hand() -> None:
    # undici's FormData serialization of the npm SDK's form, as captured from Node 20 (runs without node installed):
    # unquoted boundary, no Content-Type on text parts, arrays as image[], objects as svg[...], booleans as "true".
    boundary = "----formdata-undici-046558493615"
    body = hand_built(
        [
            (text("prompt"), b"p"),
            (text("stream"), b"true"),
            (text("svg[reasoning][effort]"), b"low"),
            (text("image[]") + '; filename="blob"\r\nContent-Type: application/octet-stream', b"x"),
            (text("image[]") + '; filename="q%22\\z%0D.png"\r\nContent-Type: image/png', PNG),
        ],
        boundary,
    )

    form = parse_form(body, f"multipart/form-data; boundary={boundary}")

    assert form.fields == {"prompt": "p", "stream": "true", "svg": {"reasoning": {"effort": "low"}}}
    # undici sends a backslash as itself and the quote as %22: both stay as sent.
    assert [(part.filename, part.data) for part in form.files["image"]] == [("blob", b"x"), ("q%22\\z%0D.png", PNG)]


# --- framing --------------------------------------------------------------------------------------------------------


def test_binary_with_crlf_dashes_and_boundary_like_runs_is_kept_whole() -> None:
    # Boundary-like but not delimiters: not after CRLF, or not followed by "--" or the line's end.
    data = b"--BOUNDARY\r\n" + BINARY + b"x--BOUNDARY--\r\n\r\n--BOUNDARYX\r\n\r\n--BOUNDARY-\r\n\r\n--BOUNDARY" + b"\r"
    body = hand_built([(text("image") + '; filename="a.png"', data), (text("prompt"), b"p")])

    form = parse_form(body, CT)

    assert form.files["image"][0].data == data
    assert form.fields == {"prompt": "p"}


def test_empty_file_and_empty_text_field() -> None:
    body = hand_built([(text("mask") + '; filename="m.png"\r\nContent-Type: image/png', b""), (text("user"), b"")])

    form = parse_form(body, CT)

    assert form.files == {"mask": [FilePart(name="mask", filename="m.png", content_type="image/png", data=b"")]}
    assert form.fields == {"user": ""}


def test_quoted_boundary_with_space_and_other_parameters() -> None:
    boundary = "simple boundary:'()+_,-./=?"
    body = hand_built([(text("prompt"), b"p")], boundary)

    form = parse_form(body, f'Multipart/Form-Data ; charset=utf-8; boundary="{boundary}"; x=y')

    assert form.fields == {"prompt": "p"}


def test_missing_final_crlf_preamble_epilogue_and_transport_padding() -> None:
    body = b"preamble that mentions --BOUNDARY-- in passing\r\n--BOUNDARY \t\r\n" + text("prompt").encode() + b"\r\n\r\np\r\n--BOUNDARY--"
    assert parse_form(body, CT).fields == {"prompt": "p"}

    with_epilogue = hand_built([(text("prompt"), b"p")], preamble=b"This is a preamble.", epilogue=b"\r\nan epilogue\r\n--BOUNDARY\r\n")
    assert parse_form(with_epilogue, CT).fields == {"prompt": "p"}


def test_header_names_and_disposition_type_are_case_insensitive_and_folded_lines_join() -> None:
    headers = 'content-disposition: Form-Data;\r\n name="image";\r\n\tfilename="a.png"\r\nCONTENT-TYPE: image/png'
    body = hand_built([(headers, b"A")])

    assert parse_form(body, CT).files == {"image": [FilePart(name="image", filename="a.png", content_type="image/png", data=b"A")]}


def test_filename_star_rfc5987_wins_and_a_bad_one_falls_back() -> None:
    body = hand_built(
        [
            (text("image[]") + "; filename=\"naive.png\"; filename*=UTF-8''na%C3%AFve%20%E2%9C%93.png", b"1"),
            (text("image[]") + "; filename*=utf-8'en'%C3%A9.png", b"2"),
            (text("image[]") + "; filename=\"plain.png\"; filename*=UTF-8''bad%FF.png", b"3"),
            (text("image[]") + "; filename=\"plain2.png\"; filename*=utf-16''x.png", b"4"),
            (text("image[]") + "; filename*=iso-8859-1''%E9t%E9.png", b"5"),
            (text("image[]") + "; filename*=koi8-r''%C1.png", b"6"),
        ]
    )

    names = [part.filename for part in parse_form(body, CT).files["image"]]

    # The last has only a filename* this service does not decode: still a file, its filename as sent.
    assert names == ["naïve ✓.png", "é.png", "plain.png", "plain2.png", "été.png", "koi8-r''%C1.png"]


def test_file_is_a_part_with_a_filename_or_a_non_text_content_type() -> None:
    body = hand_built(
        [
            (text("image") + "\r\nContent-Type: image/png", b"no filename"),
            (text("prompt") + "\r\nContent-Type: text/plain; charset=UTF-8", "ü".encode()),
            (text("mask") + '; filename=""', b"empty filename"),
        ]
    )

    form = parse_form(body, CT)

    assert form.fields == {"prompt": "ü"}
    assert form.files["image"] == [FilePart(name="image", filename=None, content_type="image/png", data=b"no filename")]
    assert form.files["mask"] == [FilePart(name="mask", filename="", content_type=None, data=b"empty filename")]


def test_repeated_and_bracket_names_fold_into_lists_and_objects() -> None:
    body = hand_built(
        [
            (text("user"), b"u1"),
            (text("user"), b"u2"),
            (text("one[]"), b"only"),
            (text("mixed"), b"a"),
            (text("mixed[]"), b"b"),
            (text("svg[tags][]"), b"t1"),
            (text("svg[tags][]"), b"t2"),
            (text("svg[model]"), b"m"),
            (text("a]b"), b"flat"),
            (text("c[d"), b"flat too"),
            (text("e[][f]"), b"not a path"),
        ]
    )

    form = parse_form(body, CT)

    assert form.fields == {
        "user": ["u1", "u2"],
        "one": ["only"],
        "mixed": ["a", "b"],
        "svg": {"tags": ["t1", "t2"], "model": "m"},
        "a]b": "flat",
        "c[d": "flat too",
        "e[][f]": "not a path",
    }


def test_empty_form() -> None:
    assert parse_form(b"--BOUNDARY--\r\n", CT) == FormData(fields={}, files={})


def test_limits_are_inclusive_and_files_are_not_text_limited() -> None:
    body = hand_built([(text("prompt"), b"x" * 10), (text("image") + '; filename="a.png"', b"y" * 100)])

    form = parse_form(body, CT, max_parts=2, max_field_bytes=10)

    assert form.fields == {"prompt": "x" * 10}
    assert form.files["image"][0].data == b"y" * 100


# --- refusals -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "multipart/mixed; boundary=BOUNDARY",
        "multipart/form-data",
        "multipart/form-data; charset=utf-8",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=" + "b" * 71,
        'multipart/form-data; boundary="ends in space "',
        'multipart/form-data; boundary="unterminated',
        "multipart/form-data; boundary=bad\\char",
    ],
)
def test_missing_or_bad_boundary(content_type: str) -> None:
    error = invalid(hand_built([(text("prompt"), b"p")]), content_type)

    assert error.param == "Content-Type"
    assert "boundary" in error.message


def test_boundary_of_70_characters_is_allowed() -> None:
    boundary = "b" * 70
    assert parse_form(hand_built([(text("prompt"), b"p")], boundary), f"multipart/form-data; boundary={boundary}").fields == {"prompt": "p"}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"prompt=p",
        b"--OTHER\r\n" + text("prompt").encode() + b"\r\n\r\np\r\n--OTHER--\r\n",
        b"--BOUNDARYX\r\n",
    ],
    ids=["empty", "not-multipart", "other-boundary", "boundary-prefix"],
)
def test_no_delimiter(body: bytes) -> None:
    assert "no delimiter" in invalid(body, CT).message


@pytest.mark.parametrize(
    "body",
    [
        b"--BOUNDARY\r\n" + text("prompt").encode() + b"\r\n\r\np",
        b"--BOUNDARY\r\n" + text("prompt").encode() + b"\r\n\r\np\r\n--BOUNDARY",
        b"--BOUNDARY\r\n" + text("prompt").encode() + b"\r\n\r\np\r\n--BOUNDARY\r\n" + text("n").encode() + b"\r\n\r\n2",
        b"--BOUNDARY\r\n" + text("prompt").encode() + b"\r\n\r\np\r\n--BOUNDARY-",
    ],
    ids=["truncated", "no-dashes", "truncated-second-part", "one-dash"],
)
def test_no_closing_delimiter(body: bytes) -> None:
    assert "no closing delimiter" in invalid(body, CT).message


@pytest.mark.parametrize(
    "headers",
    [
        "Content-Type: text/plain",
        'Content-Disposition: attachment; name="prompt"',
        "Content-Disposition: form-data",
        'Content-Disposition: form-data; filename="a.png"',
        'Content-Disposition: form-data; name=""',
        'Content-Disposition: form-data; name="unterminated',
    ],
)
def test_part_without_form_data_name(headers: str) -> None:
    assert "Content-Disposition: form-data; name=" in invalid(hand_built([(headers, b"p")]), CT).message


def test_part_without_any_header() -> None:
    body = b"--BOUNDARY\r\n\r\nvalue\r\n--BOUNDARY--\r\n"
    assert "Content-Disposition" in invalid(body, CT).message


def test_malformed_headers() -> None:
    no_colon = hand_built([(text("prompt") + "\r\nnot a header", b"p")])
    assert "malformed header" in invalid(no_colon, CT).message

    unterminated = b"--BOUNDARY\r\n" + text("prompt").encode() + b"\r\n--BOUNDARY--\r\n"
    assert "headers do not end" in invalid(unterminated, CT).message

    latin1 = hand_built([('Content-Disposition: form-data; name="caf\xe9"', b"p")]).replace("café".encode(), "café".encode("latin-1"))
    assert "not UTF-8" in invalid(latin1, CT).message


def test_too_many_parts() -> None:
    body = hand_built([(text("a"), b"1"), (text("b"), b"2"), (text("c"), b"3")])

    error = invalid(body, CT, max_parts=2)

    assert "more than 2 parts" in error.message


def test_text_field_over_the_limit_names_it() -> None:
    body = hand_built([(text("prompt"), b"x" * 11)])

    error = invalid(body, CT, max_field_bytes=10)

    assert error.param == "prompt"
    assert "'prompt' is 11 bytes: at most 10" in error.message


def test_text_field_not_utf8_names_it() -> None:
    error = invalid(hand_built([(text("prompt"), "café".encode("latin-1"))]), CT)

    assert error.param == "prompt"
    assert "not UTF-8" in error.message


@pytest.mark.parametrize(
    ("first", "second", "param"),
    [
        ((text("image") + '; filename="a.png"', b"A"), (text("image"), b"text"), "image"),
        ((text("image"), b"text"), (text("image[]") + '; filename="a.png"', b"A"), "image"),
        ((text("svg[model]"), b"m"), (text("svg") + '; filename="s.svg"\r\nContent-Type: image/svg+xml', b"<svg/>"), "svg"),
    ],
)
def test_name_both_a_file_and_a_text_field(first: tuple[str, bytes], second: tuple[str, bytes], param: str) -> None:
    error = invalid(hand_built([first, second]), CT)

    assert error.param == param
    assert "both as a file" in error.message


@pytest.mark.parametrize(
    ("names", "param"),
    [
        (["svg", "svg[model]"], "svg"),
        (["svg[model]", "svg"], "svg"),
        (["svg[model]", "svg[model][effort]"], "svg"),
        (["svg[reasoning][effort]", "svg[reasoning]"], "svg"),
        (["svg[reasoning][effort]", "svg[reasoning][]"], "svg"),
        (["tags[]", "tags[x]"], "tags"),
    ],
)
def test_conflicting_nested_names(names: list[str], param: str) -> None:
    error = invalid(hand_built([(text(name), b"v") for name in names]), CT)

    assert error.param == param
    assert "conflicts" in error.message


# --- scalar coercion ------------------------------------------------------------------------------------------------


def test_coerce_form_scalars_types_only_the_named_well_formed_values() -> None:
    fields: dict[str, object] = {
        "n": "2",
        "output_compression": "-1",
        "frame_count": "two",
        "partial_images": "2.5",
        "stream": "false",
        "flag": "True",
        "other": "yes",
        "size": "2",
        "tags": ["1"],
        "svg": {"n": "3"},
    }

    typed = coerce_form_scalars(
        fields,
        int_fields=frozenset({"n", "output_compression", "frame_count", "partial_images", "tags"}),
        bool_fields=frozenset({"stream", "flag", "other"}),
    )

    assert typed == {
        "n": 2,
        "output_compression": -1,
        "frame_count": "two",
        "partial_images": "2.5",
        "stream": False,
        "flag": True,
        "other": "yes",
        "size": "2",
        "tags": ["1"],
        "svg": {"n": "3"},
    }
    assert fields["n"] == "2"  # the input is not changed


def test_strict_int_fields_refuse_form_strings_until_coerced() -> None:
    form = parse_form(hand_built([(text("n"), b"2"), (text("size"), b"256x256")]), CT)

    with pytest.raises(pydantic.ValidationError) as refused:
        ImageVariationOptions.model_validate(form.fields)
    assert refused.value.errors()[0]["loc"] == ("n",)
    # An explicit strict=False overrides StrictInt (pydantic 2.13), but it takes "2.0", " 2 " and True as well.
    assert ImageVariationOptions.model_validate({"n": " 2.0 "}, strict=False).n == 2

    typed = ImageVariationOptions.model_validate(coerce_form_scalars(form.fields, frozenset({"n"}), frozenset()))
    assert typed.n == 2

    bad = coerce_form_scalars({"n": "two"}, frozenset({"n"}), frozenset())
    with pytest.raises(pydantic.ValidationError) as named:
        ImageVariationOptions.model_validate(bad)
    assert named.value.errors()[0]["loc"] == ("n",)
