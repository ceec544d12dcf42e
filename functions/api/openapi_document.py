"""The API's OpenAPI document, built ahead of time: ``python -m functions.api.openapi_document`` writes
``functions/api/openapi.json``, which ``GET /openapi.json`` and ``/docs`` serve as it is. A cold start then imports
none of Powertools' OpenAPI machinery (its pydantic models of the OpenAPI spec cost more CPU than the rest of the
resolver: README Performance), and tests/unit/test_openapi_document.py fails when the file drifts from the routes
and models. The deployed package leaves this module out (functions/api/Makefile).

Powertools documents the routes (paths, summaries, security, the declared answers); what it cannot see is added
here: the JSON body of the generation route (the route validates its own body), the request bodies of the upload
routes, which parse their own bodies (functions/api/forms.py), each with its multipart form (the files plus the
options as fields) and its JSON form; and the ``text/event-stream`` answer of the routes that stream
(``stream: true``), its events' schemas."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, SecurityScheme
from pydantic import BaseModel, TypeAdapter

from functions.api.app import EDITS_PATH, GENERATIONS_PATH, VARIATIONS_PATH, app
from imagegen.http import ImagesApiResolver
from imagegen.options import ImageEditOptions, ImageEditRequest, ImageGenerationRequest, ImageVariationOptions, ImageVariationRequest
from imagegen.streaming import StreamEvent

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")

# What API Gateway checks before the function runs (template.yaml's AuthMode); declared so that clients, SDK generators
# and the "Authorize" button of /docs know it. The function itself checks nothing of it. GET /, /health, /docs and
# /openapi.json are public.
SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    "authorization": APIKey(
        name="Authorization",
        in_=APIKeyIn.header,
        description="AuthMode ApiKey (default): 'Bearer <API key>', what the OpenAI SDKs send for api_key. "
        "AuthMode IAM: an AWS Signature Version 4 Authorization header (service execute-api).",
    )
}

# Per route: its files (name -> description), the model of its form's text fields, the model of its JSON form.
UploadForm = tuple[dict[str, str], type[BaseModel], type[BaseModel]]
UPLOAD_FORMS: dict[str, UploadForm] = {
    EDITS_PATH: (
        {"image": "One image, or several as image[] (1-16, per model)", "mask": "PNG with alpha", "markup": "PNG overlay"},
        ImageEditOptions,
        ImageEditRequest,
    ),
    VARIATIONS_PATH: ({"image": "The image to vary"}, ImageVariationOptions, ImageVariationRequest),
}
# The routes that take a JSON body the route validates itself (imagegen.http.validated_body), and its model.
JSON_BODIES: dict[str, type[BaseModel]] = {GENERATIONS_PATH: ImageGenerationRequest}
# The routes that answer stream: true with server-sent events, and what their events are.
STREAMING_ROUTES: dict[str, Any] = {GENERATIONS_PATH: StreamEvent, EDITS_PATH: StreamEvent}

STREAM_ANSWER = (
    "With stream: true (a deployment with ResponseStreaming=true), server-sent events: 'event: <type>' and one "
    "'data: <JSON>' line each; partial_images (0-3) partial images, then one completed event per image, sent once it is "
    "stored (its url beside b64_json); a failure after the first byte is an error event, the stream's last."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _component(document: dict[str, Any], model: type[BaseModel], name: str) -> dict[str, Any]:
    """``model``'s JSON schema (validation mode, as Powertools documents a body), stored as the component ``name``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas[name] = schema
    return schema


def _refs(node: Any) -> set[str]:
    """Every ``$ref`` under ``node``."""
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node))
    return set()


def with_json_bodies(document: dict[str, Any], bodies: Mapping[str, type[BaseModel]]) -> dict[str, Any]:
    """The JSON request body of each route that validates its own, as Powertools documents a pydantic body."""
    for path, model in bodies.items():
        _component(document, model, model.__name__)
        content = {"application/json": {"schema": _ref(model.__name__)}}
        document["paths"][path]["post"]["requestBody"] = {"required": True, "content": content}
    return document


def with_upload_bodies(document: dict[str, Any], forms: Mapping[str, UploadForm]) -> dict[str, Any]:
    """The request bodies of the upload routes: their multipart form (files plus the options as fields) and JSON."""
    for path, (files, options, json_model) in forms.items():
        form = f"{options.__name__}Form"
        schema = _component(document, options, form)
        files_schema = {name: {"type": "string", "format": "binary", "description": text} for name, text in files.items()}
        schema["properties"] = {**files_schema, **schema["properties"]}
        schema["required"] = ["image", *schema.get("required", [])]
        _component(document, json_model, json_model.__name__)
        content = {"multipart/form-data": {"schema": _ref(form)}, "application/json": {"schema": _ref(json_model.__name__)}}
        document["paths"][path]["post"]["requestBody"] = {"required": True, "content": content}
    return document


def with_event_streams(document: dict[str, Any], paths: Mapping[str, type[Any] | Any]) -> dict[str, Any]:
    """The ``text/event-stream`` answer beside each streaming route's JSON 200: the schema of one event's data."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for path, events in paths.items():
        schema = TypeAdapter(events).json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        answer = document["paths"][path]["post"]["responses"]["200"]
        answer.setdefault("content", {})["text/event-stream"] = {"schema": {**schema, "description": STREAM_ANSWER}}
    return document


def build_document(resolver: ImagesApiResolver = app) -> dict[str, Any]:
    """The document of ``resolver``'s routes, as GET /openapi.json serves it."""
    resolver.configure_openapi(
        title="imagegen-serverless",
        version="1.0.0",
        description="OpenAI-compatible image generation: every image is stored in S3 and answered as a presigned URL or base64.",
        security_schemes=SECURITY_SCHEMES,
    )
    document: dict[str, Any] = json.loads(resolver.get_openapi_json_schema())
    document = with_json_bodies(document, JSON_BODIES)
    document = with_event_streams(with_upload_bodies(document, UPLOAD_FORMS), STREAMING_ROUTES)
    # Powertools adds the schemas of its 422 answers whatever the routes answer; a bad request here is a 400
    # (OpenAI's error shape), and no route declares them.
    schemas = document["components"]["schemas"]
    validation = ("HTTPValidationError", "ResponseValidationError", "ValidationError")
    rest = {**document, "components": {"schemas": {k: v for k, v in schemas.items() if k not in validation}}}
    if not _refs(rest) & {_ref(name)["$ref"] for name in validation}:
        for name in validation:
            schemas.pop(name, None)
    return document


def render(document: Mapping[str, Any]) -> str:
    """The file's text: stable key order and indentation, so that a change to the API is a readable diff."""
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write the document (or with ``--check``, exit 1 when the file on disk is not the document of today's code)."""
    text = render(build_document())
    if "--check" in argv:
        if DOCUMENT_PATH.read_text(encoding="utf-8") != text:
            print(f"{DOCUMENT_PATH} is out of date: run python -m functions.api.openapi_document", file=sys.stderr)
            return 1
        return 0
    DOCUMENT_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
