"""The playground page: one static HTML file with its CSS and JS inlined (no second request, so it works at
".../prod" as well as ".../prod/"), and a strict Content-Security-Policy that runs only that CSS and JS (by sha256,
Trusted Types enforced), lets the page call only this API, and loads images only from data: URIs (b64_json) and
the origin of the presigned URLs."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from urllib.parse import urlsplit

from imagegen.storage import ImageStore

# The tags of playground.html replaced by the named file's text, and the CSP directive that allows it by hash.
INLINE = (
    ("style-src", '<link rel="stylesheet" href="playground.css">', "style", "playground.css"),
    ("script-src", '<script src="playground.js"></script>', "script", "playground.js"),
)


def presigned_origin(store: ImageStore) -> str:
    """scheme://host[:port] of the URLs ``store`` signs (the bucket's S3 endpoint, whatever the addressing style)."""
    signed = urlsplit(store.presign("images/", 60))
    return f"{signed.scheme}://{signed.netloc}"


def build_page(static_dir: Path, *, image_origin: str) -> tuple[str, dict[str, str]]:
    """The page's HTML and its response headers."""
    html = (static_dir / "playground.html").read_text(encoding="utf-8")
    directives = ["default-src 'none'"]
    for directive, tag, element, name in INLINE:
        code = (static_dir / name).read_text(encoding="utf-8")
        if html.count(tag) != 1 or f"</{element}" in code.lower():
            raise RuntimeError(f"playground.html: cannot inline {name}")
        html = html.replace(tag, f"<{element}>{code}</{element}>")
        digest = base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode("ascii")
        directives.append(f"{directive} 'sha256-{digest}'")
    directives += [
        f"img-src data: {image_origin}",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
    headers = {
        "Content-Security-Policy": "; ".join(directives),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return html, headers
