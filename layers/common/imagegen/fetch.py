"""Fetching a request's ``image_url`` (an edit's input image or mask) without letting it reach inward.

An ``image_url`` is a URL the caller chose and this server requests: left unchecked it is a server-side request forgery
into the VPC, the Lambda's loopback or the metadata service (169.254.169.254). So a fetch here

* takes ``data:<type>;base64,...`` inline, bounded before it is decoded;
* otherwise goes only to https (plain http only to loopback, and only when the policy allows it for tests);
* resolves the host itself and refuses when *any* address is not public, then connects to the very address it
  checked (TLS still verifies the certificate for the name, sent as SNI and Host), so no second DNS answer can rebind
  the name inward between the check and the connection;
* follows redirects itself, checking every hop as the first;
* streams the body, refusing it past ``max_bytes`` and past one time budget for the whole fetch, redirects included;
* accepts only PNG, JPEG and WebP as declared by the server.

Every refusal is a 400 naming the request field; a message names the scheme and host at most, never the path or
query (a presigned URL's query is a credential).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimeout
from contextlib import ExitStack
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpcore
import httpx

from imagegen.deadline import Deadline
from imagegen.errors import InvalidRequestError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# One fetch, redirects included, never takes longer than this even when the request has more time left: a slow
# image host must not eat the provider's share of the request.
DEFAULT_FETCH_TIMEOUT_SECONDS = 10.0

# Ranges ``is_global`` lets through in Python 3.11 although no public server lives there, or that are named apart
# so a refusal says what was hit.
_PRIVATE_NETWORKS = tuple(ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")
_NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")
_SITE_LOCAL_NETWORK = ipaddress.ip_network("fec0::/10")


def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (TCP), in its order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class FetchedImage:
    data: bytes
    content_type: str  # as the server (or the data: URL) declared it, lower-case, no parameters


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Where an ``image_url`` may lead."""

    # Plain http ONLY to loopback hosts (and loopback addresses accepted at all), for tests and `make local`.
    allow_http_loopback: bool = False
    max_redirects: int = 3
    # host, port -> addresses; injectable so a test can make a public-looking name resolve inward.
    resolve: Callable[[str, int], list[str]] = system_resolve
    timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS


def non_public_reason(address: IPAddress) -> str | None:
    """What makes ``address`` unfit for an ``image_url`` ("a private address", ...), or None when it is public.

    IPv4 embedded in IPv6 (``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) is judged by the IPv4
    address it reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return non_public_reason(address.ipv4_mapped)
        if address.sixtofour is not None:
            return non_public_reason(address.sixtofour)
        if address in _NAT64_NETWORK:
            return non_public_reason(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (such as the cloud metadata service)"
    if address.is_multicast:
        return "a multicast address"
    if address in _SHARED_NETWORK:
        return "a shared (carrier-grade NAT) address"
    if any(address in network for network in _PRIVATE_NETWORKS):
        return "a private address"
    if isinstance(address, ipaddress.IPv6Address) and address in _SITE_LOCAL_NETWORK:
        return "a site-local address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "a special-purpose (non-public) address"
    return None


def _is_loopback(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass(frozen=True, slots=True)
class _Target:
    """One hop's URL, checked: where to connect and what name to present."""

    url: httpx.URL
    host: str  # ASCII (IDNA) form, as sent in SNI and Host
    addresses: tuple[IPAddress, ...]

    @property
    def origin(self) -> str:
        """Scheme and host: all of a URL a message or log may show."""
        return f"{self.url.scheme}://{self.host}"

    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.url.scheme == "https" else 80
        return name if self.url.port in (None, default_port) else f"{name}:{self.url.port}"


def _refuse(message: str, *, param: str, code: str = "invalid_image_url") -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {message}", param=param, code=code)


def _check_url(raw: str | httpx.URL, *, param: str, policy: UrlPolicy, hop: int) -> _Target:
    """The hop's target once its scheme, form and every resolved address pass; a 400 otherwise."""
    where = "a redirect of the image_url" if hop else "the image_url"
    try:
        url = raw if isinstance(raw, httpx.URL) else httpx.URL(raw)
    except httpx.InvalidURL:
        raise _refuse(f"{where} is not a valid URL.", param=param) from None
    if url.scheme not in ("https", "http"):
        allowed = "https" if hop else "https or a data:image/...;base64 URL"
        raise _refuse(f"{where} must be {allowed}, not {url.scheme or 'a relative URL'}.", param=param)
    if url.scheme == "http" and not policy.allow_http_loopback:
        raise _refuse(f"{where} must use https, not http.", param=param)
    if url.userinfo:
        raise _refuse(f"{where} must not carry a user name or password.", param=param)
    host = url.raw_host.decode("ascii")
    if not host:
        raise _refuse(f"{where} has no host.", param=param)
    port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise _refuse(f"{where} has port {port}; a port is 1-65535.", param=param)
    shown = f"{url.scheme}://{host}"
    addresses = _resolve(host, port, shown=shown, param=param, policy=policy)
    for address in addresses:
        if policy.allow_http_loopback and _is_loopback(address):
            continue
        reason = non_public_reason(address)
        if reason is not None:
            raise _refuse(
                f"{where} ({shown}) leads to {reason}; an image_url must point to a public server.",
                param=param,
                code="image_url_not_public",
            )
    if url.scheme == "http" and not all(_is_loopback(address) for address in addresses):
        raise _refuse(f"{where} must use https; plain http is allowed only to loopback here.", param=param)
    return _Target(url=url, host=host, addresses=addresses)


def _resolve(host: str, port: int, *, shown: str, param: str, policy: UrlPolicy) -> tuple[IPAddress, ...]:
    try:
        # An address literal is its own answer: asking a resolver would only add a way to get it wrong.
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    try:
        answers = _lookup(host, port, shown=shown, param=param, policy=policy)
    except OSError:
        raise _refuse(f"the host of {shown} could not be resolved.", param=param, code="image_url_unreachable") from None
    if not answers:
        raise _refuse(f"the host of {shown} resolves to no address.", param=param, code="image_url_unreachable")
    try:
        return tuple(ipaddress.ip_address(answer) for answer in answers)
    except ValueError:
        # A resolver answer we cannot classify is not one we may connect to.
        raise _refuse(f"the host of {shown} resolves to something that is not an IP address.", param=param) from None


# getaddrinfo takes no timeout (a resolver can take its own retries' worth, seconds), so lookups run here and the
# fetch waits for one only as long as its budget allows. A lookup given up on finishes in its thread, unseen; a few
# threads, so that hung resolvers cannot pile up threads: the lookups behind them queue and time out alike.
_LOOKUPS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="imagegen-image-url-lookup")


def _lookup(host: str, port: int, *, shown: str, param: str, policy: UrlPolicy) -> list[str]:
    """``policy.resolve``'s answer, within what is left of the fetch's budget."""
    end = _FETCH_END.get()
    lookup = _LOOKUPS.submit(policy.resolve, host, port)
    try:
        return lookup.result(timeout=None if end is None else max(0.0, end - time.monotonic()))
    except LookupTimeout:
        raise _refuse(f"the host of {shown} was not resolved in time.", param=param, code="image_url_timeout") from None


def decode_data_url(url: str, *, param: str, max_bytes: int) -> FetchedImage:
    """The image inlined in ``data:<type>[;params];base64,<payload>``; its size is checked before decoding."""
    header, comma, payload = url.partition(",")
    if not comma:
        raise _refuse("a data: URL must be data:<type>;base64,<payload>.", param=param)
    media_type, *parameters = header[len("data:") :].split(";")
    if not parameters or parameters[-1].strip().lower() != "base64":
        raise _refuse("a data: URL must be base64-encoded (data:<type>;base64,<payload>).", param=param)
    content_type = _check_content_type(media_type, param=param, source="the data: URL")
    # Base64 gives 4 characters for 3 bytes: a payload longer than this cannot decode to max_bytes or fewer.
    if len(payload) > 4 * -(-max_bytes // 3):
        raise _too_large(max_bytes, param=param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("the data: URL's payload is not valid base64.", param=param) from None
    if len(data) > max_bytes:
        raise _too_large(max_bytes, param=param)
    if not data:
        raise _refuse("the data: URL holds no image.", param=param)
    return FetchedImage(data=data, content_type=content_type)


def _check_content_type(declared: str | None, *, param: str, source: str) -> str:
    content_type = (declared or "").split(";", 1)[0].strip().lower()
    if content_type not in ALLOWED_CONTENT_TYPES:
        what = f"content type {content_type!r}" if content_type else "no content type"
        raise _refuse(
            f"{source} declared {what}; allowed are {', '.join(sorted(ALLOWED_CONTENT_TYPES))}.", param=param, code="invalid_image_type"
        )
    return content_type


def _too_large(max_bytes: int, *, param: str) -> InvalidRequestError:
    return _refuse(f"the image is larger than the limit of {max_bytes} bytes.", param=param, code="image_too_large")


def _timed_out(budget: float, *, param: str) -> InvalidRequestError:
    return _refuse(f"the image_url did not deliver the image within {budget:.1f} s.", param=param, code="image_url_timeout")


# The monotonic time by which the fetch running in this context must end; the network backend of fetch_client()
# cuts every connect, TLS handshake, read and write at it (httpx's own timeouts are per operation, and a connect,
# handshake and header wait could each use all of them).
_FETCH_END: ContextVar[float | None] = ContextVar("imagegen_fetch_end", default=None)


class _RedactUrls(logging.Filter):
    """httpx logs every request's full URL at INFO; during a fetch here that is the caller's, whose path and query may
    be a credential (a presigned URL): only its scheme and address are left."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _FETCH_END.get() is not None and isinstance(record.args, tuple):
            record.args = tuple(
                f"{arg.scheme}://{arg.netloc.decode('ascii')}/..." if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RedactUrls())


def _bounded(timeout: float | None, timeout_error: type[httpcore.TimeoutException]) -> float | None:
    end = _FETCH_END.get()
    if end is None:
        return timeout
    remaining = end - time.monotonic()
    if remaining <= 0:
        raise timeout_error("the image_url fetch ran out of time")
    return remaining if timeout is None else min(timeout, remaining)


class _BoundedStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._backend.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("image_url fetches use TCP only")


@cache
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs tens of milliseconds; one context serves every fetch (SSLContext is thread-safe).
    return httpx.create_ssl_context()


def fetch_client(*, verify: ssl.SSLContext | None = None) -> httpx.Client:
    """A client fit for fetch_image: its every network operation ends with the fetch's time budget, it keeps no
    connection (a connection pinned to an address was verified for one name only), follows no redirect and ignores
    proxy variables (a proxy would resolve the name again). ``verify`` replaces the system CAs (tests)."""
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx.HTTPTransport takes no network backend; its pool is the one place to give it one.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=verify or _default_ssl_context(), max_keepalive_connections=0, network_backend=_BoundedBackend()
    )
    return httpx.Client(transport=transport, trust_env=False, follow_redirects=False)


def fetch_image(
    url: str, *, param: str, max_bytes: int, deadline: Deadline, policy: UrlPolicy, client: httpx.Client | None = None
) -> FetchedImage:
    """The image ``url`` names (data: or http(s)), fetched under ``policy``; a 400 naming ``param`` on any refusal.

    The whole fetch gets min(the deadline's remaining time, policy.timeout_seconds); with no time left the deadline's
    504. ``client`` defaults to a fresh fetch_client(); another client gets only its own per-operation timeouts
    between the checks of the budget here."""
    if url[:5].lower() == "data:":
        return decode_data_url(url, param=param, max_bytes=max_bytes)
    budget = min(deadline.require("fetch the image_url"), policy.timeout_seconds)
    end = time.monotonic() + budget
    token = _FETCH_END.set(end)
    try:
        with ExitStack() as stack:
            http = client if client is not None else stack.enter_context(fetch_client())
            return _fetch(url, http=http, param=param, max_bytes=max_bytes, policy=policy, budget=budget, end=end)
    finally:
        _FETCH_END.reset(token)


def _fetch(url: str, *, http: httpx.Client, param: str, max_bytes: int, policy: UrlPolicy, budget: float, end: float) -> FetchedImage:
    current: str | httpx.URL = url
    for hop in range(policy.max_redirects + 1):
        target = _check_url(current, param=param, policy=policy, hop=hop)
        with ExitStack() as stack:
            response = _open(target, stack=stack, http=http, param=param, budget=budget, end=end)
            if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
                try:
                    current = target.url.join(response.headers["location"])
                except httpx.InvalidURL:
                    raise _refuse("the image_url redirected to an invalid URL.", param=param) from None
                continue
            if not 200 <= response.status_code < 300:
                raise _refuse(f"the image_url answered HTTP {response.status_code}.", param=param, code="image_url_http_error")
            return _read_image(response, target=target, param=param, max_bytes=max_bytes, budget=budget, end=end)
    raise _refuse(f"the image_url redirected more than {policy.max_redirects} times.", param=param, code="too_many_redirects")


def _open(target: _Target, *, stack: ExitStack, http: httpx.Client, param: str, budget: float, end: float) -> httpx.Response:
    """The response of the first of the target's addresses that accepts a connection."""
    headers = {
        "Host": target.host_header(),
        # Compressed transfer would let a small body inflate past max_bytes in one decoded chunk.
        "Accept-Encoding": "identity",
        "Accept": ", ".join(sorted(ALLOWED_CONTENT_TYPES)),
        "Connection": "close",
        "User-Agent": "imagegen-serverless image_url fetcher",
    }
    failure = "the connection failed"
    for address in target.addresses:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise _timed_out(budget, param=param)
        pinned = target.url.copy_with(host=str(address))
        try:
            return stack.enter_context(
                http.stream(
                    "GET",
                    pinned,
                    headers=headers,
                    extensions={"sni_hostname": target.host},
                    follow_redirects=False,
                    timeout=httpx.Timeout(remaining),
                )
            )
        except httpx.TimeoutException:
            raise _timed_out(budget, param=param) from None
        except httpx.InvalidURL:
            # httpx parses a redirect's Location even when it follows none, and fails on some (data:, no host).
            raise _refuse("the image_url redirected to a URL that is not a valid https URL.", param=param) from None
        except httpx.ConnectError as error:
            # Another address of the name may answer; a certificate not valid for the name fails them all alike.
            failure = _describe(error)
        except httpx.TransportError as error:
            raise _refuse(f"{target.origin} failed: {_describe(error)}.", param=param, code="image_url_unreachable") from None
    raise _refuse(f"could not connect to {target.origin}: {failure}.", param=param, code="image_url_unreachable")


def _describe(error: BaseException) -> str:
    """What went wrong, without the exception's text (it may hold the address or the URL)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "its TLS certificate is not valid for the name"
        if isinstance(cause, ssl.SSLError):
            return "the TLS handshake failed"
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.RemoteProtocolError):
        return "the connection ended or broke the HTTP protocol"
    return "the connection failed"


def _read_image(response: httpx.Response, *, target: _Target, param: str, max_bytes: int, budget: float, end: float) -> FetchedImage:
    content_type = _check_content_type(response.headers.get("content-type"), param=param, source="the image_url")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise _refuse(f"the image_url answered with Content-Encoding {encoding}; serve the image uncompressed.", param=param)
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes, param=param)
    body = bytearray()
    try:
        # No chunk_size: httpx would gather that many bytes before yielding, and a drip would never reach the clock check.
        for chunk in _chunks(response.iter_raw(), end=end, budget=budget, param=param):
            body += chunk
            if len(body) > max_bytes:
                raise _too_large(max_bytes, param=param)
    except httpx.TimeoutException:
        raise _timed_out(budget, param=param) from None
    except httpx.TransportError as error:
        raise _refuse(
            f"{target.origin} failed while sending the image: {_describe(error)}.", param=param, code="image_url_unreachable"
        ) from None
    if not body:
        raise _refuse("the image_url answered an empty body.", param=param)
    return FetchedImage(data=bytes(body), content_type=content_type)


def _chunks(chunks: Iterator[bytes], *, end: float, budget: float, param: str) -> Iterator[bytes]:
    """The body's chunks while the budget lasts: a server that drips a byte at a time never trips a per-read
    timeout, so the clock is checked between chunks too."""
    for chunk in chunks:
        if time.monotonic() > end:
            raise _timed_out(budget, param=param)
        yield chunk
