"""Who a request comes from, for per-caller state: the IAM principal API Gateway verified, else the API key."""

from __future__ import annotations

from imagegen.auth import caller_scope, key_fingerprint

KEY = "sample-api-key-0123456789abcdef"
ROLE = "arn:aws:sts::123456789012:assumed-role/image-client"


def test_an_api_key_caller_is_its_key() -> None:
    assert caller_scope(authorization=f"Bearer {KEY}", user_arn=None) == key_fingerprint(KEY)
    assert caller_scope(authorization=None, user_arn=None) == key_fingerprint("anonymous")


def test_an_iam_caller_is_its_principal_never_its_signature_header() -> None:
    user = "arn:aws:iam::123456789012:user/alice"
    scope = caller_scope(authorization="AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=aa", user_arn=user)
    assert scope == caller_scope(authorization="AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=bb", user_arn=user)
    assert scope.startswith("iam-") and "alice" not in scope
    # A Bearer header next to a verified principal changes nothing: the principal is the caller
    assert caller_scope(authorization=f"Bearer {KEY}", user_arn=user) == scope
    assert scope != caller_scope(authorization=None, user_arn="arn:aws:iam::123456789012:user/bob")


def test_an_assumed_role_is_one_caller_across_its_sessions() -> None:
    assert caller_scope(authorization=None, user_arn=f"{ROLE}/task-1") == caller_scope(authorization=None, user_arn=f"{ROLE}/task-2")
    assert caller_scope(authorization=None, user_arn=f"{ROLE}/task-1") != caller_scope(
        authorization=None, user_arn="arn:aws:sts::123456789012:assumed-role/other-role/task-1"
    )
    # The same role name in another account is another caller
    assert caller_scope(authorization=None, user_arn=f"{ROLE}/s") != caller_scope(
        authorization=None, user_arn="arn:aws:sts::210987654321:assumed-role/image-client/s"
    )
