"""AWS Signature Version 4 for API Gateway's ``AWS_IAM`` authorization (service ``execute-api``), both ways.

Clients: ``SigV4Auth`` signs every httpx request with botocore, replacing any ``Authorization`` header, so the
official OpenAI SDK can call an ``AuthMode=IAM`` deployment::

    credentials = boto3.Session().get_credentials()  # environment, profile, SSO or role, as the AWS CLI finds them
    client = OpenAI(base_url="<ApiUrl>v1", api_key="unused", http_client=httpx.Client(auth=SigV4Auth(credentials, region="<region>")))

The local gateway: ``SigV4Verifier`` checks a request as API Gateway does, by signing it again with botocore at the
request's own ``X-Amz-Date`` over the request's own ``SignedHeaders`` and comparing the signatures. Each refusal is a
``SignatureError`` carrying API Gateway's gateway response type and message; the body is needed only for the last
step (``check`` does everything before it, ``verify`` everything).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import botocore.auth
import httpx
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

SERVICE = "execute-api"
ALGORITHM = "AWS4-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"  # SigV4's ISO 8601 basic format, as in X-Amz-Date
MAX_CLOCK_SKEW = timedelta(minutes=5)
LOCAL_ACCOUNT_ID = "123456789012"  # the account id of the local front's events (build_event)
QUERY_SIGNATURE_PARAMETERS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})

# Gateway response types (template.yaml's GatewayResponses render them) and API Gateway's messages.
MISSING_AUTHENTICATION_TOKEN = "MISSING_AUTHENTICATION_TOKEN"
INVALID_SIGNATURE = "INVALID_SIGNATURE"
MISSING_TOKEN_MESSAGE = "Missing Authentication Token"
MALFORMED_MESSAGE = "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters (AWS Signature Version 4)."
MISSING_DATE_MESSAGE = "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
HOST_NOT_SIGNED_MESSAGE = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
UNKNOWN_KEY_MESSAGE = "The security token included in the request is invalid."
MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
QUERY_SIGNATURE_MESSAGE = "The local gateway verifies only header signatures (Authorization: AWS4-HMAC-SHA256 ...), not presigned URLs."

_AUTHORIZATION = re.compile(rf"^{ALGORITHM}\s+(?P<parameters>.+)$", re.DOTALL)


def _aws_request(method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> AWSRequest:
    """botocore's view of an HTTP request; repeated headers stay repeated (botocore joins them with commas)."""
    request = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        request.headers[name] = value  # an email.message.Message: assignment appends
    return request


class SigV4Auth(httpx.Auth):
    """httpx authentication that signs each request for API Gateway (``execute-api``) in ``region`` with botocore.

    ``credentials`` is a botocore ``Credentials`` (e.g. ``boto3.Session().get_credentials()``, refreshed as it
    expires, or ``Credentials(access_key_id, secret_access_key)``). The body is signed, and any ``Authorization``
    header (the OpenAI SDK's ``Bearer <api_key>``) is replaced by the signature.
    """

    requires_request_body = True

    def __init__(self, credentials: Credentials, region: str = "us-east-1") -> None:
        self.credentials = credentials
        self.region = region

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        signed = _aws_request(request.method, str(request.url), request.headers.multi_items(), request.content)
        botocore.auth.SigV4Auth(self.credentials.get_frozen_credentials(), SERVICE, self.region).add_auth(signed)
        for name in ("Authorization", "X-Amz-Date", "Date", "X-Amz-Security-Token"):
            value = signed.headers.get(name)
            if value is None:
                request.headers.pop(name, None)
            else:
                request.headers[name] = value
        yield request


class _ExactHeadersSigner(botocore.auth.SigV4Auth):
    """botocore's SigV4 over exactly the headers a request names in its ``SignedHeaders``."""

    def __init__(self, credentials: Credentials, region: str, signed_headers: Sequence[str]) -> None:
        super().__init__(credentials, SERVICE, region)
        self.names = frozenset(signed_headers)

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        chosen = HTTPHeaders()
        for name, value in request.headers.items():
            if name.lower() in self.names:
                chosen[name.lower()] = value
        return chosen


class SignatureError(Exception):
    """A request API Gateway refuses (403) before the function runs: ``response_type`` and ``message`` as it answers."""

    def __init__(self, message: str, response_type: str = INVALID_SIGNATURE) -> None:
        super().__init__(message)
        self.message = message
        self.response_type = response_type


@dataclass(frozen=True)
class Caller:
    """An authenticated IAM caller, as API Gateway puts it in ``requestContext.identity``."""

    access_key: str
    account_id: str = LOCAL_ACCOUNT_ID

    @property
    def user_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:user/local-{self.access_key}"

    def identity(self) -> dict[str, str]:
        """The identity fields an IAM-authorized request fills (caller and user: the access key id, locally)."""
        return {
            "accessKey": self.access_key,
            "accountId": self.account_id,
            "caller": self.access_key,
            "user": self.access_key,
            "userArn": self.user_arn,
        }


@dataclass(frozen=True)
class _SignedRequest:
    access_key: str
    secret: str = field(repr=False)
    timestamp: str
    signed_headers: tuple[str, ...]
    signature: str


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key.lower() == name.lower()), None)


class SigV4Verifier:
    """API Gateway's ``AWS_IAM`` check of a request against ``credentials`` (access key id -> secret access key)."""

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        region: str = "us-east-1",
        account_id: str = LOCAL_ACCOUNT_ID,
    ) -> None:
        self.credentials = dict(credentials)
        self.region = region
        self.account_id = account_id

    def check(self, target: str, headers: Sequence[tuple[str, str]]) -> _SignedRequest:
        """Everything that needs no body: the header's shape, the credential scope, the key, the time window."""
        authorization = _header(headers, "Authorization")
        if authorization is None:
            query = {key for key, _ in parse_qsl(urlsplit(target).query, keep_blank_values=True)}
            if query & QUERY_SIGNATURE_PARAMETERS:
                raise SignatureError(QUERY_SIGNATURE_MESSAGE)
            raise SignatureError(MISSING_TOKEN_MESSAGE, MISSING_AUTHENTICATION_TOKEN)
        match = _AUTHORIZATION.match(authorization.strip())
        pairs = [part.strip().partition("=") for part in match["parameters"].split(",")] if match else []
        parameters = {key: value for key, _, value in pairs}
        credential, names, signature = (parameters.get(key, "") for key in ("Credential", "SignedHeaders", "Signature"))
        scope = credential.split("/")
        if not (credential and names and signature) or len(scope) != 5 or not scope[0]:
            raise SignatureError(MALFORMED_MESSAGE)  # never the header itself: it may be someone's Bearer key
        access_key, day, region, service, terminator = scope
        raw_date = _header(headers, "X-Amz-Date")
        timestamp = self._timestamp(raw_date, _header(headers, "Date"))
        if terminator != "aws4_request":
            raise SignatureError(f"Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'.")
        if service != SERVICE:
            raise SignatureError(f"Credential should be scoped to correct service: '{SERVICE}'.")
        if region != self.region:
            raise SignatureError(f"Credential should be scoped to a valid region, not '{region}'.")
        if day != timestamp[:8]:
            raise SignatureError(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{day}' != '{timestamp[:8]}', from '{raw_date or timestamp}'."
            )
        signed_headers = tuple(names.lower().split(";"))
        if "host" not in signed_headers:
            raise SignatureError(HOST_NOT_SIGNED_MESSAGE)
        secret = self.credentials.get(access_key)
        if secret is None:
            raise SignatureError(UNKNOWN_KEY_MESSAGE)
        self._within_clock_skew(timestamp)
        return _SignedRequest(access_key, secret, timestamp, signed_headers, signature)

    def verify(self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes) -> Caller:
        """The whole check, the body included; the caller when the signature is the one botocore computes."""
        signed = self.check(target, headers)
        claimed_hash = _header(headers, "X-Amz-Content-SHA256")
        if claimed_hash is not None and claimed_hash != hashlib.sha256(body).hexdigest():
            raise SignatureError(MISMATCH_MESSAGE)  # botocore would take the header's word for the body's hash
        parts = urlsplit(target)
        request = _aws_request(method, urlunsplit(("http", "localhost", parts.path, parts.query, "")), headers, body)
        request.context["timestamp"] = signed.timestamp
        signer = _ExactHeadersSigner(Credentials(signed.access_key, signed.secret), self.region, signed.signed_headers)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected.encode(), signed.signature.encode()):
            raise SignatureError(MISMATCH_MESSAGE)
        return Caller(signed.access_key, self.account_id)

    @staticmethod
    def _timestamp(amz_date: str | None, date: str | None) -> str:
        """The signing time in SigV4's format, from X-Amz-Date or else the Date header."""
        if amz_date is None and date is None:
            raise SignatureError(MISSING_DATE_MESSAGE)
        try:
            if amz_date is not None:
                timestamp = datetime.strptime(amz_date, TIMESTAMP_FORMAT).strftime(TIMESTAMP_FORMAT)
                if timestamp != amz_date:
                    raise ValueError(amz_date)
                return timestamp
            moment = parsedate_to_datetime(date or "")
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).strftime(TIMESTAMP_FORMAT)
        except (TypeError, ValueError):
            raise SignatureError(f"Date must be in ISO-8601 'basic format'. Got '{amz_date or date}'.") from None

    def _within_clock_skew(self, timestamp: str) -> None:
        signed_at = datetime.strptime(timestamp, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        now = datetime.now(UTC)
        earliest, latest, current = (f"{moment:{TIMESTAMP_FORMAT}}" for moment in (now - MAX_CLOCK_SKEW, now + MAX_CLOCK_SKEW, now))
        if signed_at < now - MAX_CLOCK_SKEW:
            raise SignatureError(f"Signature expired: {timestamp} is now earlier than {earliest} ({current} - 5 min.)")
        if signed_at > now + MAX_CLOCK_SKEW:
            raise SignatureError(f"Signature not yet current: {timestamp} is still later than {latest} ({current} + 5 min.)")
