"""The request bodies of the upload routes in the OpenAPI document: they parse their own bodies (functions/api/forms.py),
so Powertools cannot document them; each gets its multipart form (the files plus the options as fields) and its JSON
form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

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
