"""The API's response serializer: the same JSON text as Powertools' own, built without copying base64 twice."""

from __future__ import annotations

import base64
import json
import os
import tracemalloc
from decimal import Decimal

import pytest

from imagegen.http import response_json

B64 = base64.b64encode(os.urandom(3000)).decode()


@pytest.mark.parametrize(
    "body",
    [
        {"created": 1, "data": [{"b64_json": B64}, {"b64_json": B64[:-4], "revised_prompt": 'a "fox" \\ \u00e9 \n'}]},
        {"created": 1, "data": [{"b64_json": 'not base64: "quoted" \n'}]},  # left to the encoder, escaped
        {"created": 1, "data": [{"url": "https://x/y?z=1"}], "usage": {"total_tokens": 3}},
        {"object": "list", "data": []},
        {"status": "ok"},
        {"amount": Decimal("1.5")},  # Powertools' Encoder still handles what json cannot
        ["a", 1],
    ],
)
def test_same_json_as_the_plain_encoder(body: object) -> None:
    text = response_json(body)
    assert json.loads(text, parse_float=Decimal) == json.loads(json.dumps(body, default=str), parse_float=Decimal)
    if not any(isinstance(v, Decimal) for v in (body.values() if isinstance(body, dict) else [])):
        assert text == json.dumps(body, separators=(",", ":"))


def test_a_placeholder_lookalike_in_the_answer_stays_as_it_was() -> None:
    body = {"created": 1, "data": [{"b64_json": B64, "revised_prompt": "0"}, {"b64_json": B64[:8]}]}
    assert json.loads(response_json(body)) == body


def test_a_large_base64_answer_is_not_copied_twice() -> None:
    big = base64.b64encode(os.urandom(3 * 2**20)).decode()  # 4 MB of base64
    body = {"created": 1, "data": [{"b64_json": big}]}
    tracemalloc.start()
    try:
        response_json(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The answer text itself, and no escaped copy of the base64 besides
    assert peak < 1.3 * len(big)
