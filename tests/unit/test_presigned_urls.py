"""Presigned URLs as S3 serves them in every region: with no endpoint override (a deployment), the bucket's regional
virtual host, https://<bucket>.s3.<region>.amazonaws.com/<key>. The global host <bucket>.s3.amazonaws.com, which
botocore signs by default, redirects for a bucket created less than a day ago and is refused by regions launched
after March 2019 (ap-east-1, me-central-1). Presigning is local computation: no network (the unit tier forbids it)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from imagegen.clients import s3_client
from imagegen.playground import build_page, presigned_origin
from imagegen.storage import ImageStore

REGIONS = ["us-east-1", "eu-west-1", "ap-east-1", "me-central-1", "us-west-2", "ap-southeast-5"]
BUCKET = "imagegen-images-123456789012"
KEY = "images/2026/12/02/req-1/0.png"
STATIC = Path(__file__).resolve().parents[2] / "functions" / "api" / "static"


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch):
    """A Lambda's environment: its region, role session credentials, and no endpoint override."""

    def in_region(region: str) -> ImageStore:
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")  # no [services] endpoint from a developer's config
        monkeypatch.setenv("AWS_REGION", region)
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
        monkeypatch.setenv("AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2VjEXAMPLE")
        s3_client.cache_clear()
        return ImageStore(s3_client(), BUCKET)

    return in_region


@pytest.mark.parametrize("region", REGIONS)
def test_urls_name_the_buckets_regional_virtual_host_and_region(deployed, region: str) -> None:
    url = deployed(region).presign(KEY, 3600)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert (parts.scheme, parts.hostname, parts.path) == ("https", f"{BUCKET}.s3.{region}.amazonaws.com", f"/{KEY}")
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    access_key, _date, scope_region, service, terminator = query["X-Amz-Credential"][0].split("/")
    assert (access_key, scope_region, service, terminator) == ("test-access-key", region, "s3", "aws4_request")
    assert query["X-Amz-Expires"] == ["3600"]
    # signed with the role's session: the URL carries its token and dies with it, whatever X-Amz-Expires says
    assert query["X-Amz-Security-Token"] == ["IQoJb3JpZ2luX2VjEXAMPLE"]


@pytest.mark.parametrize("ttl", [60, 900, 43200])
def test_expires_is_the_ttl(deployed, ttl: int) -> None:
    assert parse_qs(urlsplit(deployed("eu-west-1").presign(KEY, ttl)).query)["X-Amz-Expires"] == [str(ttl)]


@pytest.mark.parametrize("region", REGIONS)
def test_the_playground_loads_images_from_the_regional_origin_only(deployed, region: str) -> None:
    origin = presigned_origin(deployed(region))
    assert origin == f"https://{BUCKET}.s3.{region}.amazonaws.com"
    _, headers = build_page(STATIC, image_origin=origin)
    directives = dict(d.split(" ", 1) for d in headers["Content-Security-Policy"].split("; ") if " " in d)
    assert directives["img-src"] == f"data: {origin}"


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://127.0.0.1:8333", "http://127.0.0.1:8333/{bucket}/"),
        ("http://localhost:8333", "http://localhost:8333/{bucket}/"),
        ("http://[::1]:8333", "http://[::1]:8333/{bucket}/"),
    ],
)
@pytest.mark.parametrize("bucket", [BUCKET, "dotted.bucket.name"])
def test_a_local_s3_server_on_loopback_gets_path_style(monkeypatch, endpoint: str, expected: str, bucket: str) -> None:
    # local runs point boto3 at SeaweedFS on loopback: no wildcard DNS there, so the bucket goes in the path
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    s3_client.cache_clear()
    url = ImageStore(s3_client(), bucket).presign(KEY, 60)
    assert url.startswith(expected.format(bucket=bucket) + KEY + "?"), url
    assert "/eu-west-1/s3/aws4_request" in parse_qs(urlsplit(url).query)["X-Amz-Credential"][0]
