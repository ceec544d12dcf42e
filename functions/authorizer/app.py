"""TOKEN authorizer: the bearer key becomes API Gateway's usage-identifier key; the usage plan decides (403 for an
unknown key) and meters it. No bearer key: 401 (Lambda authorizers signal it by raising "Unauthorized")."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    APIGatewayAuthorizerTokenEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagegen import snapstart  # noqa: F401  (registers the SnapStart restore hooks: docs/snapstart.md)
from imagegen.auth import bearer_key, key_fingerprint

# The Logger alone, configured by the same POWERTOOLS_* variables as imagegen.observability's, whose Tracer would
# import the X-Ray SDK and botocore: a cold start (what a flood of random keys scales out) imports ~70 ms, not ~500 ms.
logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    token = APIGatewayAuthorizerTokenEvent(event)
    key = bearer_key(token.authorization_token)
    if key is None:
        raise Exception("Unauthorized")  # noqa: TRY002 - the exact signal API Gateway turns into a 401
    principal = key_fingerprint(key)
    # Debug only: a flood of random keys (each a cache miss, each an invocation) must not also be a flood of log lines,
    # which CloudWatch Logs bills per byte. The usage plan's refusals are counted by API Gateway.
    logger.debug("bearer key handed to the usage plan", extra={"principal": principal})
    policy = APIGatewayAuthorizerResponse.from_route_arn(token.method_arn, principal_id=principal, usage_identifier_key=key)
    policy.allow_all_routes()  # cached per key for every route of the API; the usage plan is the check
    return policy.asdict()
