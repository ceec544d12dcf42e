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


def test_the_sessions_of_one_role_are_different_callers() -> None:
    # IAM Identity Center: one role per permission set, the user in the session name
    alice = caller_scope(authorization=None, user_arn="arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_1a2b/alice@example.com")
    bob = caller_scope(authorization=None, user_arn="arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_1a2b/bob@example.com")
    assert alice != bob
    # The same role name in another account is another caller
    assert caller_scope(authorization=None, user_arn=f"{ROLE}/s") != caller_scope(
        authorization=None, user_arn="arn:aws:sts::210987654321:assumed-role/image-client/s"
    )


def test_cognito_identity_pool_users_behind_one_role_are_different_callers() -> None:
    # A Cognito identity pool signs every user as one role with one session name
    arn = f"{ROLE}/CognitoIdentityCredentials"
    first = caller_scope(authorization=None, user_arn=arn, cognito_identity_id="us-east-1:0000-aaaa")
    second = caller_scope(authorization=None, user_arn=arn, cognito_identity_id="us-east-1:0000-bbbb")
    assert first != second
    assert first == caller_scope(authorization=None, user_arn=arn, cognito_identity_id="us-east-1:0000-aaaa")
