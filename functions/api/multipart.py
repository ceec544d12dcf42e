"""multipart/form-data bodies of POST /v1/images/edits and /v1/images/variations, parsed (RFC 7578 over RFC 2046 framing).

API Gateway (REST) hands the function a multipart body base64-encoded (``isBase64Encoded: true``); the caller decodes it
and passes the bytes and the request's Content-Type header to :func:`parse_form`. Powertools' resolver does not parse
multipart, and the stdlib's ``cgi`` is gone in 3.13 while ``email.parser`` is not safe for binary parts, so this is a
plain parser over bytes: the body is split on ``CRLF--boundary``, a delimiter counts only when followed by ``--`` or by
optional spaces/tabs and CRLF, so a boundary-like run inside a file does not cut it.

How the official SDKs encode these requests (what this parser is built and tested against):

Python ``openai`` (3.57, multipart by ``httpx2``, byte for byte the encoder of ``httpx``):
  * boundary: 32 hex digits, unquoted (``multipart/form-data; boundary=cf82...``).
  * text fields (``_qs.stringify_items`` with ``array_format="brackets"``): no part Content-Type; ``True``/``False``
    become ``"true"``/``"false"``, numbers ``str(n)``, ``None`` and omitted values are not sent; a dict becomes
    ``svg[model]``, ``svg[reasoning][effort]``; a list becomes repeated ``key[]``.
  * files (``extract_files``): one image is a part named ``image``, a list one ``image[]`` part per file; ``mask`` and
    ``markup`` keep their names. The filename is the tuple's, or ``upload`` for bare bytes; the Content-Type is the
    tuple's, else guessed from the filename, else ``application/octet-stream``. In names and filenames ``"`` is sent as
    ``%22``, ``\\`` as ``\\\\`` and control characters as ``%XX``.

npm ``openai`` (7.59, ``internal/uploads`` ``multipartFormRequestOptions``):
  * with files and blobs it builds a platform ``FormData`` (``createForm``), which Node's fetch (undici) serializes:
    boundary ``----formdata-undici-`` and 12 digits, unquoted. Text parts have no Content-Type and carry ``String(v)``:
    ``"true"``/``"false"``, ``"2"``; ``undefined`` is not sent, ``null`` throws. Arrays are repeated ``key[]`` (so
    several images are ``image[]``, never a repeated ``image``; one image is ``image``), objects ``key[name]`` nested.
    The filename is the file's basename (directories cut at ``/`` and ``\\``), ``unknown_file`` or ``blob`` without one;
    the Content-Type is the file's type or ``application/octet-stream``. undici sends ``"``, CR and LF in names and
    filenames as ``%22``, ``%0D``, ``%0A`` and a backslash as itself.
  * with streaming uploads (``toStreamingFile``, readable streams, async iterables) the SDK encodes the body itself with
    the same field names, boundary ``openai-`` and base-36 digits, ``"``, ``\\`` and controls percent-encoded.

So both send only text fields and files, arrays as ``[]``, nested objects in brackets and scalars as strings. Parsing
keeps text values ``str``: :func:`coerce_form_scalars` turns the integer and boolean fields a caller names into ``int``
and ``bool``, because the request models' ``StrictInt`` fields refuse ``"2"`` even when validated in lax mode.

Quoted parameter values undo only the escapes ``\\"`` and ``\\\\`` (what httpx writes) and keep any other backslash
(undici's raw ``\\``); percent-encoding in names and filenames is kept as sent, since a literal ``%22`` cannot be told
from an escaped quote. ``filename*`` (RFC 5987, ``UTF-8''na%C3%AFve.png``) wins over ``filename`` when it decodes.
"""

from __future__ import annotations

import re
from contextlib import suppress
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import unquote

from imagegen.errors import InvalidRequestError

CODE = "invalid_multipart"

# RFC 2046 section 5.1.1: 1-70 of these characters, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# A bracket path: a key, then [segment]s, an empty [] only at the end (an array element).
_PATH = re.compile(r"([^\[\]]+)((?:\[[^\[\]]+\])*)(\[\])?")
_SEGMENT = re.compile(r"\[([^\[\]]+)\]")
_INTEGER = re.compile(r"-?[0-9]+")
# RFC 8187 (5987): charset'language'percent-encoded; the two charsets every recipient must support.
_RFC5987 = re.compile(r"(?i:(utf-8|iso-8859-1))'[^']*'(.*)", re.DOTALL)
_BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class FilePart:
    """One uploaded file as sent."""

    name: str  # form field name as sent, e.g. "image[]"
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class FormData:
    """A parsed form: text fields folded into JSON-like values, files by their base name."""

    # "svg[model]" -> {"svg": {"model": ...}}, "svg[reasoning][effort]" nested; repeated or "x[]" names -> lists; values stay str
    fields: dict[str, object]
    # "image" for both "image" and "image[]"; "mask"; "markup"
    files: dict[str, list[FilePart]]


def parse_form(body: bytes, content_type_header: str, *, max_parts: int = 64, max_field_bytes: int = 65_536) -> FormData:
    """Parse a multipart/form-data body. A part with a filename, or with a Content-Type other than text/plain, is a
    file; every other part is a UTF-8 text field. Raises InvalidRequestError (code ``invalid_multipart``) for a body or
    form this service cannot take as sent."""
    dash = b"--" + _boundary(content_type_header).encode("ascii")
    position = _opening_delimiter(body, dash)
    if position is None:  # only the close delimiter: an empty form, as FormData with no entries is sent
        return FormData(fields={}, files={})
    texts: list[tuple[str, str]] = []
    files: dict[str, list[FilePart]] = {}
    file_names: dict[str, str] = {}  # top-level key -> the name it came with, for the conflict message
    count = 0
    while True:
        count += 1
        if count > max_parts:
            raise InvalidRequestError(f"The multipart body has more than {max_parts} parts: send at most {max_parts}.", code=CODE)
        content_start, headers = _part_headers(body, position)
        found = _next_delimiter(body, dash, content_start)
        if found is None:
            raise InvalidRequestError(
                "The multipart body has no closing delimiter '--<boundary>--': send the whole multipart/form-data body.", code=CODE
            )
        content_end, position, closing = found
        name, filename, content_type = _disposition(headers)
        data = body[content_start:content_end]
        if filename is not None or (content_type is not None and _media_type(content_type) != "text/plain"):
            key = name.removesuffix("[]")
            files.setdefault(key, []).append(FilePart(name=name, filename=filename, content_type=content_type, data=data))
            file_names.setdefault(_top_key(name), name)
        else:
            texts.append((name, _text(name, data, max_field_bytes)))
        if closing:
            break
    fields = _fold(texts)
    for top, name in file_names.items():
        if top in fields:
            raise InvalidRequestError(
                f"The multipart field '{top}' is sent both as a file ('{name}') and as a text field: send it as one of them.",
                param=top,
                code=CODE,
            )
    return FormData(fields=fields, files=files)


def coerce_form_scalars(fields: dict[str, object], int_fields: frozenset[str], bool_fields: frozenset[str]) -> dict[str, object]:
    """A copy of top-level ``fields`` with the named integer fields ("2" -> 2) and boolean fields ("true"/"false", in any
    case -> True/False) typed. A value that is not such a number or boolean stays the string it was, so that validation
    names the field."""
    typed = dict(fields)
    for key, value in fields.items():
        if not isinstance(value, str):
            continue
        if key in int_fields and _INTEGER.fullmatch(value):
            typed[key] = int(value)
        elif key in bool_fields and value.lower() in _BOOLEANS:
            typed[key] = _BOOLEANS[value.lower()]
    return typed


def _boundary(content_type_header: str) -> str:
    parsed = _parameters(content_type_header)
    if parsed is None or parsed[0] != "multipart/form-data":
        raise InvalidRequestError(
            "The Content-Type must be multipart/form-data with a boundary parameter for this request.", param="Content-Type", code=CODE
        )
    boundary = parsed[1].get("boundary")
    if boundary is None:
        raise InvalidRequestError(
            "The multipart/form-data Content-Type has no boundary parameter: send 'multipart/form-data; boundary=...'.",
            param="Content-Type",
            code=CODE,
        )
    if not _BOUNDARY.fullmatch(boundary):
        raise InvalidRequestError(
            "The multipart boundary must be 1 to 70 letters, digits, spaces or '()+_,-./:=? (not ending in a space).",
            param="Content-Type",
            code=CODE,
        )
    return boundary


def _opening_delimiter(body: bytes, dash: bytes) -> int | None:
    """Where the first part's headers start, or None when the first delimiter is the closing one. Anything before the
    first delimiter is a preamble, ignored."""
    at_start = _delimiter_end(body, 0, dash) if body.startswith(dash) else None
    if at_start is not None:
        return None if at_start[1] else at_start[0]
    found = _next_delimiter(body, dash, 0)
    if found is None:
        raise InvalidRequestError(
            "The multipart body has no delimiter line: it must start with '--' and the boundary of its Content-Type.", code=CODE
        )
    return None if found[2] else found[1]


def _next_delimiter(body: bytes, dash: bytes, start: int) -> tuple[int, int, bool] | None:
    """The first delimiter at or after ``start``: (where the part before it ends, where the next part starts, whether it
    is the closing one), or None."""
    needle = b"\r\n" + dash
    index = body.find(needle, start)
    while index >= 0:
        end = _delimiter_end(body, index + 2, dash)
        if end is not None:
            return index, end[0], end[1]
        index = body.find(needle, index + 1)
    return None


def _delimiter_end(body: bytes, at: int, dash: bytes) -> tuple[int, bool] | None:
    """``dash`` starts at ``at``: is it a delimiter? (the index after its line, closing) or None. A close delimiter is
    ``--`` after the boundary, whatever follows (the final CRLF is often missing); another one is its line's end."""
    after = at + len(dash)
    if body.startswith(b"--", after):
        return after + 2, True
    while after < len(body) and body[after] in b" \t":  # RFC 2046 transport padding
        after += 1
    if body.startswith(b"\r\n", after):
        return after + 2, False
    return None


def _part_headers(body: bytes, start: int) -> tuple[int, dict[str, str]]:
    """The part's headers (names lower-cased, folded lines joined) and where its content starts."""
    if body.startswith(b"\r\n", start):
        return start + 2, {}
    end = body.find(b"\r\n\r\n", start)
    if end < 0:
        raise InvalidRequestError("A multipart part's headers do not end with an empty line.", code=CODE)
    try:
        block = body[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("A multipart part's headers are not UTF-8.", code=CODE) from None
    headers: dict[str, str] = {}
    last = ""
    for line in block.split("\r\n"):
        if line[:1] in (" ", "\t") and last:
            headers[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InvalidRequestError(f"A multipart part has a malformed header line: {line[:80]!r}.", code=CODE)
        last = name.strip().lower()
        headers.setdefault(last, value.strip())
    return end + 4, headers


def _disposition(headers: dict[str, str]) -> tuple[str, str | None, str | None]:
    """(name, filename, content type) of a part; it must be ``Content-Disposition: form-data; name="..."``."""
    parsed = _parameters(headers.get("content-disposition", ""))
    name = parsed[1].get("name") if parsed is not None and parsed[0] == "form-data" else None
    if parsed is None or not name:
        raise InvalidRequestError(
            "Every multipart part needs a 'Content-Disposition: form-data; name=\"...\"' header (RFC 7578).", code=CODE
        )
    filename = parsed[1].get("filename")
    star = parsed[1].get("filename*")
    if star is not None:
        # Another charset or a bad escape: the plain filename names the file, else filename* as sent (still a file).
        extended = _RFC5987.fullmatch(star)
        filename = filename if filename is not None else star
        if extended:
            with suppress(UnicodeDecodeError):
                filename = unquote(extended.group(2), encoding=extended.group(1), errors="strict")
    return name, filename, headers.get("content-type")


def _parameters(value: str) -> tuple[str, dict[str, str]] | None:
    """``type; key=value; key="quoted"`` -> (lower-cased type, {lower-cased key: value}), the first of a repeated key
    kept; None when a quoted value does not end."""
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    index = 0
    while index < len(rest):
        semicolon = rest.find(";", index)
        equals = rest.find("=", index)
        if equals < 0 or 0 <= semicolon < equals:  # a bare word without a value
            index = len(rest) if semicolon < 0 else semicolon + 1
            continue
        key = rest[index:equals].strip().lower()
        index = equals + 1
        while index < len(rest) and rest[index] in " \t":
            index += 1
        if rest[index : index + 1] == '"':
            quoted = _quoted(rest, index + 1)
            if quoted is None:
                return None
            text, index = quoted
            semicolon = rest.find(";", index)
            index = len(rest) if semicolon < 0 else semicolon + 1
        else:
            semicolon = rest.find(";", index)
            stop = len(rest) if semicolon < 0 else semicolon
            text, index = rest[index:stop].strip(), stop + 1
        if key:
            params.setdefault(key, text)
    return kind.strip().lower(), params


def _quoted(text: str, start: int) -> tuple[str, int] | None:
    r"""A quoted string's value from just after its opening quote, and the index after its closing quote. Only \" and
    \\ are escapes: httpx writes those, while undici sends a backslash of a filename as itself."""
    chars: list[str] = []
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] in ('"', "\\"):
            chars.append(text[index + 1])
            index += 2
        elif char == '"':
            return "".join(chars), index + 1
        else:
            chars.append(char)
            index += 1
    return None


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _text(name: str, data: bytes, max_field_bytes: int) -> str:
    if len(data) > max_field_bytes:
        raise InvalidRequestError(
            f"The multipart text field '{name}' is {len(data)} bytes: at most {max_field_bytes} are allowed.", param=name, code=CODE
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(
            f"The multipart text field '{name}' is not UTF-8: send text fields as UTF-8.", param=name, code=CODE
        ) from None


def _path(name: str) -> tuple[list[str], bool]:
    """``svg[reasoning][effort]`` -> (["svg", "reasoning", "effort"], False); ``image[]`` -> (["image"], True). A name
    that is not such a bracket path is one flat key."""
    match = _PATH.fullmatch(name)
    if match is None:
        return [name], False
    return [match.group(1), *_SEGMENT.findall(match.group(2))], match.group(3) is not None


def _top_key(name: str) -> str:
    return _path(name)[0][0]


def _fold(texts: list[tuple[str, str]]) -> dict[str, object]:
    """Text fields, in order, into nested dicts; a repeated name or an ``x[]`` name makes a list."""
    fields: dict[str, object] = {}
    for name, value in texts:
        keys, is_array = _path(name)
        node = fields
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                _conflict(name, "".join([keys[0], *(f"[{k}]" for k in keys[1 : depth + 1])]))
            node = child
        leaf = keys[-1]
        existing = node.get(leaf)
        if existing is None:
            node[leaf] = [value] if is_array else value
        elif isinstance(existing, list):
            existing.append(value)
        elif isinstance(existing, str):
            node[leaf] = [existing, value]
        else:
            _conflict(name, name.removesuffix("[]"))
    return fields


def _conflict(name: str, at: str) -> NoReturn:
    raise InvalidRequestError(
        f"The multipart field '{name}' conflicts with another field: '{at}' is sent both as a value and as an object "
        "of bracketed names (such as 'svg[model]'); send one of them.",
        param=at.partition("[")[0],
        code=CODE,
    )
