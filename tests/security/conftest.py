"""Security tier: real HTTP(S) servers on loopback that an ``image_url`` fetch is pointed at, and resolvers that make
public-looking names answer inward addresses.

A server's routes are plain functions of the request handler, so a test states what the remote does (redirect,
drip, lie about its length) next to what it expects of the fetch; each server records every connection it accepted
and every request it read, so a test can also assert that nothing reached it."""

from __future__ import annotations

import contextlib
import datetime
import io
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

Route = Callable[[BaseHTTPRequestHandler], None]

# The name the test certificate is issued for; the TLS server presents it whatever SNI it is sent.
CERT_NAME = "images.example.com"


def png_bytes(size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    sni: str | None


@dataclass
class Server:
    """One loopback HTTP(S) server; ``routes`` maps a path (without query) to what it does."""

    port: int
    scheme: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)
    connections: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


def _handler_for(record: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, and a body without Content-Length ends when the server closes.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            record.requests.append(SeenRequest(self.path, dict(self.headers.items()), getattr(self.connection, "sni", None)))
            route = record.routes.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(404)
                return
            # The fetch may give up on us mid-answer, as it should.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                route(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, record: Server | None, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.record = record
        super().__init__(("127.0.0.1", 0), BaseHTTPRequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        # Counted at accept, before any TLS handshake, so "no connection" means no TCP connection at all.
        sock, address = self.socket.accept()
        assert self.record is not None
        self.record.connections += 1
        if self.tls is None:
            return sock, address
        sock.settimeout(5)
        return self.tls.wrap_socket(sock, server_side=True), address


@dataclass(frozen=True)
class Certificates:
    server: ssl.SSLContext  # presents a certificate for CERT_NAME, issued by the test CA
    client: ssl.SSLContext  # trusts only the test CA


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="session")
def certificates() -> Certificates:
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("imagegen test CA"))
        .issuer_name(_name("imagegen test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(CERT_NAME))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(CERT_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder) / "leaf.pem", Path(folder) / "leaf.key"
        cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        server.load_cert_chain(cert_file, key_file)

    def remember_sni(sock: ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        sock.sni = name  # type: ignore[attr-defined]  # read back by the handler for SeenRequest.sni

    server.sni_callback = remember_sni  # type: ignore[assignment]
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return Certificates(server=server, client=client)


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """``start_server(tls=None)``: a running loopback server, stopped after the test."""
    running: list[_LoopbackServer] = []

    def start(tls: ssl.SSLContext | None = None) -> Server:
        http = _LoopbackServer(None, tls)
        record = Server(port=http.server_address[1], scheme="https" if tls else "http")
        http.record = record
        http.RequestHandlerClass = _handler_for(record)
        threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        running.append(http)
        return record

    yield start
    for http in running:
        http.shutdown()
        http.server_close()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@dataclass
class Resolver:
    """A DNS stand-in: name -> addresses; records every question, and knows no other name."""

    answers: dict[str, list[str]]
    asked: list[str] = field(default_factory=list)

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.answers[host])
