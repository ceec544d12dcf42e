"""imagegen.fetch against real servers on loopback: an ``image_url`` must not lead the server inward, whether by DNS,
by redirect or by an address literal, and a hostile remote (slow, oversized, lying, wrong type) costs a bounded
time and memory and ends in a 400 that names the field.

The loopback servers stand in for public hosts: a test policy allows loopback (``allow_http_loopback``) and a
resolver maps public-looking names to 127.0.0.1, so every other inward range is still refused as in production."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from imagegen.deadline import Deadline
from imagegen.errors import InvalidRequestError
from imagegen.fetch import FetchedImage, UrlPolicy, fetch_client, fetch_image
from tests.security.conftest import CERT_NAME, Certificates, Resolver, Route, Server, png_bytes

PARAM = "images[0].image_url"
PNG = png_bytes()


def serve(body: bytes, *, content_type: str | None = "image/png", length: int | None = -1, status: int = 200) -> Route:
    """A route answering ``body``; ``length`` -1 declares the true Content-Length, None none (the body ends at close)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        if content_type is not None:
            handler.send_header("Content-Type", content_type)
        if length is not None:
            handler.send_header("Content-Length", str(len(body) if length == -1 else length))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def redirect(location: str, status: int = 302) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def drip(interval: float, *, headers_only: bool = False, seconds: float = 8.0) -> Route:
    """A PNG's headers at once, then one byte per ``interval`` (or nothing at all) for ``seconds``."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.end_headers()
        handler.wfile.flush()
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(interval)
            if not headers_only:
                handler.wfile.write(b"\x00")
                handler.wfile.flush()

    return route


def silent(seconds: float = 8.0) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)

    return route


def loopback_policy(resolver: Resolver, **overrides: float | int) -> UrlPolicy:
    return UrlPolicy(allow_http_loopback=True, resolve=resolver, **overrides)  # type: ignore[arg-type]


def fetch(url: str, policy: UrlPolicy, *, max_bytes: int = 100_000, client: httpx.Client | None = None) -> FetchedImage:
    return fetch_image(url, param=PARAM, max_bytes=max_bytes, deadline=Deadline.after(20), policy=policy, client=client)


def refused(call: Callable[[], object]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as excinfo:
        call()
    error = excinfo.value
    assert error.status_code == 400 and error.param == PARAM
    return error


@pytest.fixture
def names() -> Resolver:
    """images.example.com is "public" (our loopback server); the others answer the inward addresses they are named for."""
    return Resolver(
        {
            "images.example.com": ["127.0.0.1"],
            "private.example.com": ["10.0.0.1"],
            "metadata.example.com": ["169.254.169.254"],
            "mapped.example.com": ["::ffff:169.254.169.254"],
            "split.example.com": ["127.0.0.1", "10.0.0.1"],
        }
    )


class TestDnsPointingInward:
    """Production policy (no loopback exception): a name resolving inward is refused before any connection."""

    @pytest.mark.parametrize("answer", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::ffff:127.0.0.1", "::1", "100.64.0.1", "0.0.0.0"])
    def test_refused_before_connecting(self, server: Server, answer: str) -> None:
        server.routes["/a.png"] = serve(PNG)
        resolver = Resolver({"images.example.com": [answer]})
        sent: list[httpx.Request] = []
        # Any address other than 127.0.0.1 has no server here: a recording transport shows no request was even tried.
        recording = httpx.Client(transport=httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500)))
        for client in (None, recording):
            error = refused(
                lambda client=client: fetch(f"https://images.example.com:{server.port}/a.png", UrlPolicy(resolve=resolver), client=client)
            )
            assert error.code == "image_url_not_public"
            assert "https://images.example.com" in error.message
        assert resolver.asked == ["images.example.com", "images.example.com"]
        assert server.connections == 0 and sent == []

    def test_plain_http_is_refused_without_even_resolving(self, server: Server) -> None:
        resolver = Resolver({"images.example.com": ["127.0.0.1"]})
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/a.png", UrlPolicy(resolve=resolver)))
        assert "https" in error.message
        assert resolver.asked == [] and server.connections == 0

    def test_a_loopback_literal_is_refused(self, server: Server) -> None:
        server.routes["/a.png"] = serve(PNG)
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]"):
            error = refused(lambda host=host: fetch(f"https://{host}:{server.port}/a.png", UrlPolicy()))
            assert error.code == "image_url_not_public"
        assert server.connections == 0

    def test_localhost_by_the_system_resolver_is_refused(self, server: Server) -> None:
        error = refused(lambda: fetch(f"https://localhost:{server.port}/a.png", UrlPolicy()))
        assert error.code == "image_url_not_public" and server.connections == 0

    def test_one_inward_answer_among_others_refuses_the_name(self, server: Server, names: Resolver) -> None:
        error = refused(lambda: fetch(f"http://split.example.com:{server.port}/a.png", loopback_policy(names)))
        assert error.code == "image_url_not_public" and "private" in error.message
        assert server.connections == 0


class TestPinning:
    def test_the_fetch_connects_to_the_checked_address_and_resolves_once(self, server: Server) -> None:
        server.routes["/a.png"] = serve(PNG)
        # The system resolver knows no images.example.com: the fetch can only succeed by connecting where we checked.
        resolver = Resolver({"images.example.com": ["127.0.0.1"]})
        image = fetch(f"http://images.example.com:{server.port}/a.png?X-Amz-Signature=abc", loopback_policy(resolver))
        assert image == FetchedImage(data=PNG, content_type="image/png")
        assert resolver.asked == ["images.example.com"]
        (seen,) = server.requests
        assert seen.path == "/a.png?X-Amz-Signature=abc"
        assert seen.headers["Host"] == f"images.example.com:{server.port}"
        assert seen.headers["Accept-Encoding"] == "identity"


class TestRedirects:
    def test_a_good_png_through_one_relative_redirect(self, server: Server, names: Resolver) -> None:
        server.routes["/start"] = redirect("/images/a.png", status=301)
        server.routes["/images/a.png"] = serve(PNG)
        image = fetch(f"http://images.example.com:{server.port}/start", loopback_policy(names))
        assert image.data == PNG
        assert [seen.path for seen in server.requests] == ["/start", "/images/a.png"]

    @pytest.mark.parametrize(
        ("location", "kind"),
        [
            ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local"),
            ("http://metadata.example.com/latest/meta-data/", "link-local"),
            ("http://private.example.com/a.png", "private"),
            ("https://private.example.com/a.png", "private"),
            ("http://[::ffff:169.254.169.254]/", "link-local"),
            ("http://mapped.example.com/", "link-local"),
            ("http://10.0.0.1:8080/admin", "private"),
            ("http://[fd00::1]/", "private"),
        ],
    )
    def test_a_redirect_inward_is_refused_and_says_so(self, server: Server, names: Resolver, location: str, kind: str) -> None:
        server.routes["/start"] = redirect(location)
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/start", loopback_policy(names)))
        assert error.code == "image_url_not_public"
        assert "redirect" in error.message and kind in error.message
        assert "latest" not in error.message and "admin" not in error.message

    def test_the_redirect_chain_is_checked_at_every_hop(self, server: Server, names: Resolver) -> None:
        server.routes["/one"] = redirect(f"http://images.example.com:{server.port}/two", status=307)
        server.routes["/two"] = redirect("http://private.example.com/three", status=308)
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/one", loopback_policy(names)))
        assert error.code == "image_url_not_public"
        assert [seen.path for seen in server.requests] == ["/one", "/two"]
        assert names.asked == ["images.example.com", "images.example.com", "private.example.com"]

    @pytest.mark.parametrize("location", ["data:image/png;base64,AAAA", "file:///etc/passwd", "ftp://images.example.com/a.png"])
    def test_a_redirect_to_another_scheme_is_refused(self, server: Server, names: Resolver, location: str) -> None:
        server.routes["/start"] = redirect(location)
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/start", loopback_policy(names)))
        assert "redirect" in error.message and "https" in error.message

    def test_too_many_redirects(self, server: Server, names: Resolver) -> None:
        for hop in range(10):
            server.routes[f"/hop{hop}"] = redirect(f"/hop{hop + 1}")
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/hop0", loopback_policy(names, max_redirects=3)))
        assert error.code == "too_many_redirects" and "3" in error.message
        assert [seen.path for seen in server.requests] == ["/hop0", "/hop1", "/hop2", "/hop3"]

    def test_exactly_max_redirects_is_followed(self, server: Server, names: Resolver) -> None:
        for hop in range(3):
            server.routes[f"/hop{hop}"] = redirect(f"/hop{hop + 1}")
        server.routes["/hop3"] = serve(PNG)
        assert fetch(f"http://images.example.com:{server.port}/hop0", loopback_policy(names, max_redirects=3)).data == PNG


class TestHostileRemote:
    def test_a_slow_drip_fails_within_the_cap(self, server: Server, names: Resolver) -> None:
        server.routes["/drip.png"] = drip(0.5)
        started = time.monotonic()
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/drip.png", loopback_policy(names, timeout_seconds=1.0)))
        elapsed = time.monotonic() - started
        assert error.code == "image_url_timeout" and "1.0 s" in error.message
        assert 0.9 < elapsed < 2.0

    def test_a_slow_drip_fails_within_the_cap_with_a_callers_own_client(self, server: Server, names: Resolver) -> None:
        # A plain client's per-read timeout never trips on a byte every 0.5 s: only the clock between chunks stops it.
        server.routes["/drip.png"] = drip(0.5)
        started = time.monotonic()
        with httpx.Client(trust_env=False) as client:
            error = refused(
                lambda: fetch(
                    f"http://images.example.com:{server.port}/drip.png", loopback_policy(names, timeout_seconds=1.0), client=client
                )
            )
        assert error.code == "image_url_timeout"
        assert time.monotonic() - started < 2.0

    @pytest.mark.parametrize("route", [drip(0.5, headers_only=True), silent()], ids=["silent-after-headers", "no-answer"])
    def test_a_remote_that_stops_answering_fails_within_the_cap(self, server: Server, names: Resolver, route: Route) -> None:
        server.routes["/stall.png"] = route
        started = time.monotonic()
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/stall.png", loopback_policy(names, timeout_seconds=1.0)))
        assert error.code == "image_url_timeout"
        assert time.monotonic() - started < 2.0

    def test_a_read_that_starts_late_still_ends_at_the_cap(self, server: Server, names: Resolver) -> None:
        # One byte just before the cap, then silence: a read timeout counted from that byte would end near twice the cap.
        def late_then_silent(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.end_headers()
            handler.wfile.flush()
            time.sleep(0.9)
            handler.wfile.write(b"\x89")
            handler.wfile.flush()
            time.sleep(5)

        server.routes["/late.png"] = late_then_silent
        started = time.monotonic()
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/late.png", loopback_policy(names, timeout_seconds=1.0)))
        assert error.code == "image_url_timeout"
        assert time.monotonic() - started < 1.5

    def test_the_cap_is_the_deadlines_when_that_is_nearer(self, server: Server, names: Resolver) -> None:
        server.routes["/drip.png"] = drip(0.2)
        started = time.monotonic()
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch_image(
                f"http://images.example.com:{server.port}/drip.png",
                param=PARAM,
                max_bytes=100_000,
                deadline=Deadline.after(0.8),
                policy=loopback_policy(names),
            )
        assert excinfo.value.code == "image_url_timeout"
        assert time.monotonic() - started < 1.8

    def test_a_body_over_max_bytes_is_refused(self, server: Server, names: Resolver) -> None:
        server.routes["/big.png"] = serve(b"\x89PNG" + b"\x00" * 997)  # 1001 bytes
        server.routes["/fits.png"] = serve(b"\x89PNG" + b"\x00" * 996)
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/big.png", loopback_policy(names), max_bytes=1000))
        assert error.code == "image_too_large" and "1000 bytes" in error.message
        assert len(fetch(f"http://images.example.com:{server.port}/fits.png", loopback_policy(names), max_bytes=1000).data) == 1000

    def test_a_body_without_content_length_is_cut_at_max_bytes(self, server: Server, names: Resolver) -> None:
        server.routes["/big.png"] = serve(b"\x00" * 5_000_000, length=None)
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/big.png", loopback_policy(names), max_bytes=1000))
        assert error.code == "image_too_large"

    def test_a_declared_length_over_max_bytes_is_refused_unread(self, server: Server, names: Resolver) -> None:
        server.routes["/big.png"] = serve(PNG, length=10_000_000)
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/big.png", loopback_policy(names), max_bytes=1000))
        assert error.code == "image_too_large"

    def test_a_content_length_understating_the_body_reads_only_what_it_declared(self, server: Server, names: Resolver) -> None:
        server.routes["/lie.png"] = serve(b"\x89PNG" + b"\x00" * 1_000_000, length=10)
        image = fetch(f"http://images.example.com:{server.port}/lie.png", loopback_policy(names), max_bytes=1000)
        assert image.data == b"\x89PNG" + b"\x00" * 6

    def test_a_content_length_overstating_the_body_is_unreachable(self, server: Server, names: Resolver) -> None:
        server.routes["/short.png"] = serve(PNG, length=len(PNG) + 500)
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/short.png", loopback_policy(names)))
        assert error.code == "image_url_unreachable"

    @pytest.mark.parametrize("content_type", ["text/html", "image/gif", "image/svg+xml", "application/octet-stream", None])
    def test_a_wrong_or_missing_content_type_is_refused_by_name(self, server: Server, names: Resolver, content_type: str | None) -> None:
        server.routes["/a.png"] = serve(PNG, content_type=content_type)
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/a.png", loopback_policy(names)))
        assert error.code == "invalid_image_type"
        assert (content_type or "no content type") in error.message

    def test_content_type_parameters_and_case_are_ignored(self, server: Server, names: Resolver) -> None:
        server.routes["/a.jpg"] = serve(PNG, content_type="Image/JPEG; charset=binary")
        assert fetch(f"http://images.example.com:{server.port}/a.jpg", loopback_policy(names)).content_type == "image/jpeg"

    def test_a_compressed_body_is_refused(self, server: Server, names: Resolver) -> None:
        def gzipped(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Encoding", "gzip")
            handler.end_headers()
            handler.wfile.write(b"\x1f\x8b" + b"\x00" * 20)

        server.routes["/a.png"] = gzipped
        error = refused(lambda: fetch(f"http://images.example.com:{server.port}/a.png", loopback_policy(names)))
        assert "Content-Encoding gzip" in error.message

    @pytest.mark.parametrize("status", [404, 403, 500, 304])
    def test_a_non_2xx_status_is_named(self, server: Server, names: Resolver, status: int) -> None:
        server.routes["/secret/a.png"] = serve(b"nope", content_type="text/plain", status=status)
        url = f"http://images.example.com:{server.port}/secret/a.png?X-Amz-Signature=s3cr3t"
        error = refused(lambda: fetch(url, loopback_policy(names)))
        assert f"HTTP {status}" in error.message and error.code == "image_url_http_error"
        assert "s3cr3t" not in error.message and "/secret" not in error.message

    def test_httpx_logs_no_path_or_query_of_the_image_url(self, server: Server, names: Resolver, caplog: pytest.LogCaptureFixture) -> None:
        server.routes["/secret/a.png"] = serve(PNG)
        with caplog.at_level(logging.INFO, logger="httpx"):
            fetch(f"http://images.example.com:{server.port}/secret/a.png?X-Amz-Signature=s3cr3t", loopback_policy(names))
        logged = [record.getMessage() for record in caplog.records if record.name == "httpx"]
        assert logged and all("s3cr3t" not in line and "/secret" not in line for line in logged)

    def test_a_closed_port_is_unreachable(self, server: Server, names: Resolver) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        error = refused(lambda: fetch(f"http://images.example.com:{closed_port}/a.png", loopback_policy(names)))
        assert error.code == "image_url_unreachable"


class TestTls:
    """https to a name pinned to its checked address: TLS sends the name as SNI and verifies the certificate for it."""

    @pytest.fixture
    def tls_server(self, start_server: Callable[..., Server], certificates: Certificates) -> Server:
        tls = start_server(certificates.server)
        tls.routes["/a.png"] = serve(PNG)
        return tls

    def test_https_by_name_to_the_pinned_address(self, tls_server: Server, certificates: Certificates, names: Resolver) -> None:
        with fetch_client(verify=certificates.client) as client:
            image = fetch(f"https://{CERT_NAME}:{tls_server.port}/a.png", loopback_policy(names), client=client)
        assert image.data == PNG
        (seen,) = tls_server.requests
        assert seen.sni == CERT_NAME
        assert seen.headers["Host"] == f"{CERT_NAME}:{tls_server.port}"

    def test_a_certificate_for_another_name_is_refused(self, tls_server: Server, certificates: Certificates) -> None:
        resolver = Resolver({"other.example.com": ["127.0.0.1"]})
        with fetch_client(verify=certificates.client) as client:
            error = refused(lambda: fetch(f"https://other.example.com:{tls_server.port}/a.png", loopback_policy(resolver), client=client))
        assert error.code == "image_url_unreachable" and "certificate" in error.message
        assert tls_server.requests == []

    def test_an_untrusted_certificate_is_refused_by_default(self, tls_server: Server, names: Resolver) -> None:
        error = refused(lambda: fetch(f"https://{CERT_NAME}:{tls_server.port}/a.png", loopback_policy(names)))
        assert error.code == "image_url_unreachable" and "certificate" in error.message
        assert tls_server.requests == []

    def test_https_to_loopback_is_refused_without_the_exception(
        self, tls_server: Server, certificates: Certificates, names: Resolver
    ) -> None:
        with fetch_client(verify=certificates.client) as client:
            error = refused(lambda: fetch(f"https://{CERT_NAME}:{tls_server.port}/a.png", UrlPolicy(resolve=names), client=client))
        assert error.code == "image_url_not_public"
        assert tls_server.connections == 0
