"""GET /docs: Swagger UI over the prebuilt OpenAPI document (openapi_document.py), as Powertools' ``enable_swagger``
renders it, with its bundled script and styles inlined (no CDN). Powertools' Swagger UI module imports its OpenAPI
models, so this is imported only by the requests for /docs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def swagger_page(document: str) -> str:
    from aws_lambda_powertools.event_handler import openapi
    from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html

    bundle = Path(openapi.__file__).with_name("swagger_ui")
    script = (bundle / "swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    styles = (bundle / "swagger-ui.min.css").read_text(encoding="utf-8")
    # As Powertools does: '</' escaped, so that the document cannot close the script element it is embedded in.
    return generate_swagger_html(document.replace("</", "<\\/"), script, styles, "", None)
