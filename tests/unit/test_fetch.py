"""imagegen.fetch without sockets: which addresses count as public, data: URLs, the URL and scheme rules, and the
request a fetch sends (pinned to the checked address, with the name in Host and SNI)."""

from __future__ import annotations

import base64
import ipaddress
import time

import httpx
import pytest

from imagegen.deadline import Deadline
from imagegen.errors import InvalidRequestError, ProviderTimeoutError
from imagegen.fetch import FetchedImage, UrlPolicy, decode_data_url, fetch_image, non_public_reason

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
PARAM = "images[0].image_url"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "special-purpose"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.255", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "special-purpose"),
        ("198.18.0.1", "special-purpose"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("2001:db8::1", "special-purpose"),
        ("::7f00:1", "reserved"),  # IPv4-compatible ::127.0.0.1
        ("64:ff9b:1::1", "reserved"),  # local-use NAT64
        # IPv4 inside IPv6 is judged by the IPv4 address it reaches.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:0.0.0.0", "unspecified"),
        ("::ffff:100.64.0.1", "carrier-grade NAT"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("64:ff9b::7f00:1", "loopback"),
    ],
)
def test_inward_addresses_are_refused_with_their_kind(address: str, reason: str) -> None:
    found = non_public_reason(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "52.95.110.1", "2606:4700::1111", "2001:4860:4860::8888",
     "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"],
)  # fmt: skip
def test_public_addresses_pass(address: str) -> None:
    assert non_public_reason(ipaddress.ip_address(address)) is None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def refusal(excinfo: pytest.ExceptionInfo[InvalidRequestError]) -> tuple[str, str | None, str]:
    error = excinfo.value
    assert error.status_code == 400
    return error.message, error.param, str(error.code)


class TestDataUrls:
    def test_a_png_decodes_with_its_declared_type(self) -> None:
        image = decode_data_url(f"data:image/png;base64,{b64(PNG)}", param=PARAM, max_bytes=1000)
        assert image == FetchedImage(data=PNG, content_type="image/png")

    def test_type_is_lower_cased_and_parameters_are_dropped(self) -> None:
        image = decode_data_url(f"DATA:Image/JPEG;name=a.jpg;BASE64,{b64(PNG)}", param=PARAM, max_bytes=1000)
        assert image.content_type == "image/jpeg"

    def test_fetch_image_takes_data_urls_without_any_client(self) -> None:
        image = fetch_image(
            f"data:image/webp;base64,{b64(PNG)}", param=PARAM, max_bytes=1000, deadline=Deadline.after(5), policy=UrlPolicy()
        )
        assert image.data == PNG and image.content_type == "image/webp"

    def test_exactly_max_bytes_is_accepted(self) -> None:
        assert len(decode_data_url(f"data:image/png;base64,{b64(b'x' * 999)}", param=PARAM, max_bytes=999).data) == 999

    def test_one_byte_over_is_too_large(self) -> None:
        with pytest.raises(InvalidRequestError) as excinfo:
            decode_data_url(f"data:image/png;base64,{b64(b'x' * 1000)}", param=PARAM, max_bytes=999)
        message, param, code = refusal(excinfo)
        assert (param, code) == (PARAM, "image_too_large") and "999 bytes" in message

    def test_a_huge_payload_is_refused_before_decoding(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def no_decoding(*_: object, **__: object) -> bytes:
            raise AssertionError("decoded a payload that was too long to fit")

        monkeypatch.setattr(base64, "b64decode", no_decoding)
        with pytest.raises(InvalidRequestError) as excinfo:
            decode_data_url("data:image/png;base64," + "A" * 4_000_000, param=PARAM, max_bytes=1_000_000)
        assert refusal(excinfo)[2] == "image_too_large"

    @pytest.mark.parametrize("payload", ["not base64!", "iVBORw0KGgo", "iVBO Rw0K", "iVBORw0KGgo=="])
    def test_invalid_base64_is_a_400(self, payload: str) -> None:
        with pytest.raises(InvalidRequestError) as excinfo:
            decode_data_url(f"data:image/png;base64,{payload}", param=PARAM, max_bytes=1000)
        message, param, _ = refusal(excinfo)
        assert param == PARAM and "base64" in message

    @pytest.mark.parametrize("url", [f"data:image/png,{b64(PNG)}", "data:image/png;base64", f"data:;base64,{b64(PNG)}"])
    def test_only_the_base64_form_with_a_type(self, url: str) -> None:
        with pytest.raises(InvalidRequestError):
            decode_data_url(url, param=PARAM, max_bytes=1000)

    @pytest.mark.parametrize("media_type", ["image/gif", "text/html", "image/svg+xml", "image/jpg", "application/octet-stream"])
    def test_other_types_are_refused_by_name(self, media_type: str) -> None:
        with pytest.raises(InvalidRequestError) as excinfo:
            decode_data_url(f"data:{media_type};base64,{b64(PNG)}", param=PARAM, max_bytes=1000)
        message, _, code = refusal(excinfo)
        assert code == "invalid_image_type" and media_type in message and "image/png" in message

    def test_an_empty_image_is_refused(self) -> None:
        with pytest.raises(InvalidRequestError):
            decode_data_url("data:image/png;base64,", param=PARAM, max_bytes=1000)


class Recorder:
    """An httpx transport that records what a fetch would send and answers a PNG (no socket is opened)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, headers={"Content-Type": "image/png"}, stream=httpx.ByteStream(PNG))

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"no such host {host}")
        return answers[host]

    return resolve


PUBLIC = UrlPolicy(resolve=resolver({"images.example.com": ["93.184.216.34"], "v6.example.com": ["2606:2800:220:1::1"]}))


def fetch(url: str, policy: UrlPolicy = PUBLIC, recorder: Recorder | None = None) -> FetchedImage:
    recorder = recorder or Recorder()
    return fetch_image(url, param=PARAM, max_bytes=10_000, deadline=Deadline.after(5), policy=policy, client=recorder.client())


class TestUrlRules:
    @pytest.mark.parametrize(
        "url",
        ["http://images.example.com/a.png", "ftp://images.example.com/a.png", "file:///etc/passwd", "gopher://images.example.com/",
         "/relative.png", "javascript:alert(1)"],
    )  # fmt: skip
    def test_only_https_without_the_loopback_exception(self, url: str) -> None:
        recorder = Recorder()
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch(url, recorder=recorder)
        message, param, _ = refusal(excinfo)
        assert param == PARAM and "https" in message
        assert recorder.requests == []

    @pytest.mark.parametrize("url", ["https://user:pass@images.example.com/a.png", "https://user@images.example.com/a.png"])
    def test_no_userinfo(self, url: str) -> None:
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch(url)
        assert "user name or password" in refusal(excinfo)[0]

    @pytest.mark.parametrize("url", ["https://images.example.com:0/a.png", "https://images.example.com:70000/a.png", "https:///a.png"])
    def test_malformed_hosts_and_ports(self, url: str) -> None:
        with pytest.raises(InvalidRequestError):
            fetch(url)

    def test_http_is_allowed_only_to_loopback_even_with_the_exception(self) -> None:
        policy = UrlPolicy(allow_http_loopback=True, resolve=PUBLIC.resolve)
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch("http://images.example.com/a.png", policy=policy)
        assert "plain http is allowed only to loopback" in refusal(excinfo)[0]

    def test_http_to_loopback_with_the_exception_is_fetched(self) -> None:
        recorder = Recorder()
        policy = UrlPolicy(allow_http_loopback=True, resolve=resolver({"localhost": ["127.0.0.1", "::1"]}))
        assert fetch("http://localhost:8123/a.png", policy=policy, recorder=recorder).data == PNG
        assert str(recorder.requests[0].url) == "http://127.0.0.1:8123/a.png"

    def test_the_loopback_exception_still_refuses_other_inward_addresses(self) -> None:
        policy = UrlPolicy(allow_http_loopback=True, resolve=resolver({"mixed.example.com": ["127.0.0.1", "10.0.0.1"]}))
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch("http://mixed.example.com/a.png", policy=policy)
        assert refusal(excinfo)[2] == "image_url_not_public"

    @pytest.mark.parametrize(
        ("answers", "kind"),
        [(["127.0.0.1"], "loopback"), (["10.1.2.3"], "private"), (["169.254.169.254"], "link-local"),
         (["93.184.216.34", "10.0.0.1"], "private"), (["::ffff:127.0.0.1"], "loopback"), (["fd00::1"], "private")],
    )  # fmt: skip
    def test_any_inward_answer_refuses_the_name(self, answers: list[str], kind: str) -> None:
        recorder = Recorder()
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch(
                "https://images.example.com/a.png", policy=UrlPolicy(resolve=resolver({"images.example.com": answers})), recorder=recorder
            )
        message, _, code = refusal(excinfo)
        assert code == "image_url_not_public" and kind in message and "https://images.example.com" in message
        assert recorder.requests == []

    @pytest.mark.parametrize(
        "url", ["https://127.0.0.1/a.png", "https://[::1]/a.png", "https://[::ffff:169.254.169.254]/", "https://10.0.0.1:8443/"]
    )
    def test_inward_address_literals_are_refused_without_resolving(self, url: str) -> None:
        def no_resolving(host: str, port: int) -> list[str]:
            raise AssertionError("an address literal was resolved")

        with pytest.raises(InvalidRequestError) as excinfo:
            fetch(url, policy=UrlPolicy(resolve=no_resolving))
        assert refusal(excinfo)[2] == "image_url_not_public"

    def test_unresolvable_and_non_address_answers(self) -> None:
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch("https://nowhere.example.com/a.png")
        assert refusal(excinfo)[2] == "image_url_unreachable"
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch("https://images.example.com/", policy=UrlPolicy(resolve=resolver({"images.example.com": ["not-an-ip"]})))
        assert "not an IP address" in refusal(excinfo)[0]
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch("https://images.example.com/", policy=UrlPolicy(resolve=resolver({"images.example.com": []})))
        assert refusal(excinfo)[2] == "image_url_unreachable"

    def test_a_resolver_that_hangs_is_cut_at_the_fetchs_budget(self) -> None:
        # getaddrinfo has no timeout of its own: a name whose lookup hangs must still end the fetch in its budget
        def hanging(host: str, port: int) -> list[str]:
            time.sleep(3)
            return ["93.184.216.34"]

        recorder = Recorder()
        started = time.monotonic()
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch("https://slow-dns.example.com/a.png", policy=UrlPolicy(resolve=hanging, timeout_seconds=0.5), recorder=recorder)
        message, param, code = refusal(excinfo)
        assert time.monotonic() - started < 2
        assert (param, code) == (PARAM, "image_url_timeout") and "slow-dns.example.com" in message
        assert recorder.requests == []

    def test_no_time_left_is_the_deadlines_504(self) -> None:
        with pytest.raises(ProviderTimeoutError):
            fetch_image("https://images.example.com/a.png", param=PARAM, max_bytes=10, deadline=Deadline.after(0), policy=PUBLIC)


class TestPinnedRequest:
    def test_connects_to_the_checked_address_with_the_name_in_host_and_sni(self) -> None:
        recorder = Recorder()
        fetch("https://images.example.com/dir/a.png?X-Amz-Signature=abc", recorder=recorder)
        (request,) = recorder.requests
        assert str(request.url) == "https://93.184.216.34/dir/a.png?X-Amz-Signature=abc"
        assert request.headers["Host"] == "images.example.com"
        assert request.extensions["sni_hostname"] == "images.example.com"
        assert request.headers["Accept-Encoding"] == "identity"
        assert request.headers["Connection"] == "close"

    def test_a_port_and_an_ipv6_address(self) -> None:
        recorder = Recorder()
        fetch("https://v6.example.com:8443/a.png", recorder=recorder)
        (request,) = recorder.requests
        assert str(request.url) == "https://[2606:2800:220:1::1]:8443/a.png"
        assert request.headers["Host"] == "v6.example.com:8443"
        assert request.extensions["sni_hostname"] == "v6.example.com"

    def test_an_idn_host_is_sent_in_its_ascii_form(self) -> None:
        recorder = Recorder()
        fetch(
            "https://bücher.example.com/a.png",
            policy=UrlPolicy(resolve=resolver({"xn--bcher-kva.example.com": ["93.184.216.34"]})),
            recorder=recorder,
        )
        assert recorder.requests[0].headers["Host"] == "xn--bcher-kva.example.com"

    def test_refusals_never_show_the_path_or_query(self) -> None:
        def not_found(request: httpx.Request) -> httpx.Response:
            return httpx.Response(404)

        client = httpx.Client(transport=httpx.MockTransport(not_found))
        with pytest.raises(InvalidRequestError) as excinfo:
            fetch_image(
                "https://images.example.com/secret-path/a.png?X-Amz-Signature=s3cr3t",
                param=PARAM,
                max_bytes=10,
                deadline=Deadline.after(5),
                policy=PUBLIC,
                client=client,
            )
        message = excinfo.value.message
        assert "HTTP 404" in message and "s3cr3t" not in message and "secret-path" not in message
