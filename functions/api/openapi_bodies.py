"""What Powertools cannot document in the OpenAPI document: the request bodies of the upload routes, which parse their
own bodies (functions/api/forms.py), each with its multipart form (the files plus the options as fields) and its JSON
form; and the ``text/event-stream`` answer of the routes that stream (``stream: true``), its events' schemas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter

# Per route: its files (name -> description), the model of its form's text fields, the model of its JSON form.
UploadForm = tuple[dict[str, str], type[BaseModel], type[BaseModel]]


def with_upload_bodies(document: dict[str, Any], forms: Mapping[str, UploadForm]) -> dict[str, Any]:
    """The request bodies of the upload routes: their multipart form (files plus the options as fields) and JSON."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for path, (files, options, json_model) in forms.items():
        content: dict[str, Any] = {}
        for media, model in (("multipart/form-data", options), ("application/json", json_model)):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            if media == "multipart/form-data":
                files_schema = {name: {"type": "string", "format": "binary", "description": text} for name, text in files.items()}
                schema["properties"] = {**files_schema, **schema["properties"]}
                schema["required"] = ["image", *schema.get("required", [])]
            schemas[f"{model.__name__}{'Form' if media.startswith('multipart') else ''}"] = schema
            content[media] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}{'Form' if media.startswith('multipart') else ''}"}}
        document["paths"][path]["post"]["requestBody"] = {"required": True, "content": content}
    return document


STREAM_ANSWER = (
    "With stream: true (a deployment with ResponseStreaming=true), server-sent events: 'event: <type>' and one "
    "'data: <JSON>' line each; partial_images (0-3) partial images, then one completed event per image, sent once it is "
    "stored (its url beside b64_json); a failure after the first byte is an error event, the stream's last."
)


def with_event_streams(document: dict[str, Any], paths: Mapping[str, type[Any] | Any]) -> dict[str, Any]:
    """The ``text/event-stream`` answer beside each streaming route's JSON 200: the schema of one event's data."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for path, events in paths.items():
        schema = TypeAdapter(events).json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        answer = document["paths"][path]["post"]["responses"]["200"]
        answer.setdefault("content", {})["text/event-stream"] = {"schema": {**schema, "description": STREAM_ANSWER}}
    return document
