"""Requests signed by stock botocore at a chosen time, for the SigV4 tests (devtools/sigv4.py signs only "now")."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devtools.sigv4 import SERVICE, TIMESTAMP_FORMAT


def signed_headers_at(
    moment: datetime,
    credentials: Credentials,
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    region: str = "us-east-1",
) -> dict[str, str]:
    """The headers of ``method url`` signed at ``moment``: botocore's own canonical request and signature, with the
    timestamp set by hand where ``add_auth`` would read the clock."""
    timestamp = moment.strftime(TIMESTAMP_FORMAT)
    all_headers = {"Host": urlsplit(url).netloc, **(headers or {}), "X-Amz-Date": timestamp}
    request = AWSRequest(method=method, url=url, data=body, headers=all_headers)
    request.context["timestamp"] = timestamp
    signer = botocore.auth.SigV4Auth(credentials, SERVICE, region)
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    names = signer.signed_headers(signer.headers_to_sign(request))
    authorization = f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, SignedHeaders={names}, Signature={signature}"
    return {**all_headers, "Authorization": authorization}
