"""template.yaml's usage resources (issue #15, docs/usage.md): the usage table as the code keys it, the settings the
generating functions get from its parameters, the Usage API's route, grants that the calls the usage code makes need
(judged by the IAM evaluator the e2e tier uses, on the calls the real code makes) and nothing more, and the daily
spend alarm on the metric the code publishes, only when asked for; the answer cache (CacheTtlSeconds) on the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from devtools import iam_eval
from devtools.aws_calls import Call, resource_params
from devtools.aws_local import create_usage_table
from devtools.sam_template import load_template, sam_transform
from imagegen.errors import InsufficientQuotaError
from imagegen.options import StoredImage
from imagegen.usage import table
from imagegen.usage.budget_document import BudgetsDocument
from imagegen.usage.budgets import BudgetGuard
from imagegen.usage.cache import AnswerCache, CachedImages
from imagegen.usage.ledger import UsageLedger
from imagegen.usage.records import UsageRecord
from tests.infrastructure.test_template import _condition

pytestmark = pytest.mark.infra

LOCAL_TABLE = "it-usage-0a1b2c3d"  # a test's table name, mapped to UsageTable through USAGE_TABLE
DEPLOYED_TABLE_ARN = f"arn:aws:dynamodb:us-east-1:123456789012:table/imagegen-UsageTable-{iam_eval.GENERATED_SUFFIX}"
CALLER = "key-0123456789abcdef"
FUNCTION_OF = {"api": "ApiFunction", "worker": "WorkerFunction", "s3_trigger": "S3TriggerFunction"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _props(template: dict[str, Any], name: str) -> dict[str, Any]:
    props: dict[str, Any] = template["Resources"][name]["Properties"]
    return props


def _variables(template: dict[str, Any], function: str) -> dict[str, Any]:
    variables: dict[str, Any] = _props(template, function)["Environment"]["Variables"]
    return variables


class _Recording:
    """A DynamoDB client that answers every call with nothing and keeps what the usage code sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(**params: Any) -> dict[str, Any]:
            self.calls.append(("".join(part.title() for part in method.split("_")), params))
            return {"Items": []}

        return call


def _usage_calls() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """What the usage code sends, by what it is doing: the budget reservation and its release, the record with its
    counters and settlement (both generating functions), the Usage API's read and the answer cache (the API)."""
    budgets = BudgetsDocument.model_validate({"per_key": {"images_per_month": 10, "usd_per_month": 5}, "per_user": {"images_per_month": 3}})
    client = _Recording()
    guard = BudgetGuard(client, LOCAL_TABLE, budgets)  # type: ignore[arg-type]
    ledger = UsageLedger(client, LOCAL_TABLE)  # type: ignore[arg-type]
    record = UsageRecord(
        id="req-1", at=1_780_000_000, caller=CALLER, end_user="u1", model="gpt-image-1", provider="openai", size="1024x1024",
        quality="low", images=1, source="image.generation", cost_usd=Decimal("0.011"),
    )  # fmt: skip
    steps: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    reservation = guard.reserve(caller=CALLER, end_user="u1", images=1, estimate_usd=Decimal("0.02"))
    assert reservation is not None
    guard.release(reservation)
    steps["reserve and release"], client.calls = client.calls, []
    ledger.record(record, extra=guard.settle_items(reservation, images=1, cost_usd=Decimal("0.011")))
    steps["record"], client.calls = client.calls, []
    ledger.counters(CALLER, "1m", 1_780_000_000, 1_780_003_600)
    steps["read"], client.calls = client.calls, []
    cache = AnswerCache(client, LOCAL_TABLE, ttl_seconds=600)  # type: ignore[arg-type]
    cache.get("0" * 64)
    cache.put(
        "0" * 64,
        CachedImages(created=1_780_000_000, images=(StoredImage(key="images/x/0.png", content_type="image/png", bytes=1),), usage=None),
    )
    steps["cache"], client.calls = client.calls, []
    return steps


def _as_recorded(function: str, operation: str, params: dict[str, Any]) -> Call:
    """One call as the e2e tier records it from the function's process (devtools/aws_calls.py)."""
    return Call(function, "dynamodb", operation, resource_params(params), "us-east-1", env={"USAGE_TABLE": LOCAL_TABLE})


def test_the_usage_table_is_keyed_as_the_code_keys_it_on_demand_expiring_recoverable_and_encrypted(template: dict[str, Any]) -> None:
    usage = _props(template, "UsageTable")

    assert usage["BillingMode"] == "PAY_PER_REQUEST"
    assert usage["KeySchema"] == [{"AttributeName": table.PK, "KeyType": "HASH"}, {"AttributeName": table.SK, "KeyType": "RANGE"}]
    assert usage["AttributeDefinitions"] == [{"AttributeName": name, "AttributeType": "S"} for name in (table.PK, table.SK)]
    assert usage["TimeToLiveSpecification"] == {"AttributeName": table.TTL_ATTRIBUTE, "Enabled": True}
    assert usage["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert usage["SSESpecification"]["SSEEnabled"] is True
    # ... and the local stack's table (devtools/aws_local.py) has the same keys
    client = _Recording()
    client.list_tables = lambda: {"TableNames": []}  # type: ignore[attr-defined]
    create_usage_table(client, LOCAL_TABLE)  # type: ignore[arg-type]
    [(operation, created)] = client.calls
    assert (operation, created["KeySchema"], created["AttributeDefinitions"]) == (
        "CreateTable",
        usage["KeySchema"],
        usage["AttributeDefinitions"],
    )
    assert template["Outputs"]["UsageTableName"]["Value"] == {"Ref": "UsageTable"}


def test_the_generating_functions_record_usage_and_get_the_budgets_and_the_api_its_admins(template: dict[str, Any]) -> None:
    api, worker, trigger = (_variables(template, name) for name in ("ApiFunction", "WorkerFunction", "S3TriggerFunction"))

    for variables in (api, worker):
        assert variables["USAGE_TABLE"] == {"Ref": "UsageTable"}
        # Unset rather than "" when the parameter is empty (an empty BUDGETS would not be valid JSON)
        assert variables["BUDGETS"] == {"Fn::If": ["HasBudgets", {"Ref": "Budgets"}, {"Ref": "AWS::NoValue"}]}
    assert api["USAGE_ADMIN_KEYS"] == {"Fn::If": ["HasUsageAdminKeys", {"Ref": "UsageAdminKeys"}, {"Ref": "AWS::NoValue"}]}
    assert api["CACHE_TTL_SECONDS"] == {"Fn::If": ["HasAnswerCache", {"Ref": "CacheTtlSeconds"}, {"Ref": "AWS::NoValue"}]}
    # The worker never reads usage nor the cache (jobs are not cached); the S3 trigger only queues (the worker
    # generates and records the job)
    assert not {"USAGE_ADMIN_KEYS", "CACHE_TTL_SECONDS"} & set(worker)
    assert not {"USAGE_TABLE", "BUDGETS", "USAGE_ADMIN_KEYS", "CACHE_TTL_SECONDS"} & set(trigger)
    parameters = template["Parameters"]
    assert (parameters["Budgets"]["Type"], parameters["Budgets"]["Default"]) == ("String", "")
    assert (parameters["UsageAdminKeys"]["Type"], parameters["UsageAdminKeys"]["Default"]) == ("String", "")


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, {}),
        (
            {"Budgets": '{"per_key": {"images_per_month": 4}}', "UsageAdminKeys": f"{CALLER},iam-fedcba9876543210", "CacheTtlSeconds": 600},
            {
                "BUDGETS": '{"per_key": {"images_per_month": 4}}',
                "USAGE_ADMIN_KEYS": f"{CALLER},iam-fedcba9876543210",
                "CACHE_TTL_SECONDS": 600,
            },
        ),
    ],
)
def test_the_parameters_deploy_as_settings_the_code_accepts(
    template: dict[str, Any], parameters: dict[str, Any], expected: dict[str, Any]
) -> None:
    from imagegen.settings import Settings

    deployed = sam_transform(template, parameters)["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert {name: deployed[name] for name in ("BUDGETS", "USAGE_ADMIN_KEYS", "CACHE_TTL_SECONDS") if name in deployed} == expected
    settings = Settings.model_validate({"IMAGES_BUCKET": "bucket", "USAGE_TABLE": LOCAL_TABLE, **expected})
    assert settings.usage_admin_keys == tuple(expected.get("USAGE_ADMIN_KEYS", "").split(",") if expected else ())
    assert (settings.budgets is None) == ("BUDGETS" not in expected)
    assert settings.cache_ttl_seconds == expected.get("CACHE_TTL_SECONDS", 0)


def test_the_admin_keys_parameter_refuses_what_the_code_would_refuse_at_cold_start(template: dict[str, Any]) -> None:
    import re

    pattern = template["Parameters"]["UsageAdminKeys"]["AllowedPattern"]
    for good in ("", CALLER, f"{CALLER}, iam-fedcba9876543210"):
        assert re.fullmatch(pattern, good), good
    for bad in ("sk-live-key", "key-0123", f"{CALLER},", "KEY-0123456789ABCDEF"):
        assert not re.fullmatch(pattern, bad), bad
    budgets = template["Parameters"]["Budgets"]["AllowedPattern"]
    assert re.fullmatch(budgets, '{"per_user": {"images_per_month": 100}}') and not re.fullmatch(budgets, "100")


def test_the_usage_route_is_secured_like_the_models_route(template: dict[str, Any]) -> None:
    events = _props(template, "ApiFunction")["Events"]
    usage, models = events["UsageImages"], events["ListModels"]

    assert (usage["Properties"]["Method"], usage["Properties"]["Path"]) == ("GET", "/v1/organization/usage/images")
    # No Auth of its own: the API's default authorizer (the bearer key in the usage plan, or SigV4), as /v1/models;
    # and a STREAM route when the function streams, as every route of it must be
    assert {key: value for key, value in usage["Properties"].items() if key not in ("Path", "Method")} == {
        key: value for key, value in models["Properties"].items() if key not in ("Path", "Method")
    }
    assert "Auth" not in usage["Properties"]


def test_the_usage_calls_the_code_makes_are_allowed_where_they_run_and_only_there(template: dict[str, Any]) -> None:
    # Given what the usage code sends (the real code, its client's answers left empty) and the deployment
    steps = _usage_calls()
    assert {operation for calls in steps.values() for operation, _ in calls} == {"TransactWriteItems", "Query", "GetItem", "PutItem"}
    deployment = iam_eval.load_deployment(template=template)

    def denied(function: str, step: str) -> list[tuple[str, str]]:
        calls = [_as_recorded(function, operation, params) for operation, params in steps[step]]
        report = iam_eval.evaluate(calls, deployment)
        assert not report.unmapped, report.unmapped
        return sorted((finding.request.action, finding.request.resource) for finding in report.denied)

    # Then both generating functions may reserve, release and record, the API alone read, and the S3 trigger nothing
    for function in ("api", "worker"):
        assert denied(function, "reserve and release") == []
        assert denied(function, "record") == []
    assert denied("api", "read") == []
    assert denied("worker", "read") == [("dynamodb:Query", DEPLOYED_TABLE_ARN)]
    # The cache answers synchronous generations only: the API's (the worker's jobs never read it)
    assert denied("api", "cache") == []
    assert denied("worker", "cache") == [("dynamodb:GetItem", DEPLOYED_TABLE_ARN)]
    assert {action for action, _ in denied("s3_trigger", "record")} == {"dynamodb:PutItem", "dynamodb:UpdateItem"}


def test_the_usage_grants_are_exactly_those_calls_on_the_usage_table(template: dict[str, Any]) -> None:
    # Every usage grant is exercised by the code's own calls (a grant they do not need would show as unexercised)
    steps = _usage_calls()
    calls = [_as_recorded("api", op, params) for step in steps.values() for op, params in step]
    calls += [_as_recorded("worker", op, params) for step in ("reserve and release", "record") for op, params in steps[step]]
    report = iam_eval.evaluate(calls, iam_eval.load_deployment(template=template))

    assert report.ok, report.lines()
    on_usage = {(g.function, g.action) for g in report.exercised + report.unexercised if g.resource == DEPLOYED_TABLE_ARN}
    assert on_usage == {
        ("api", "dynamodb:PutItem"),
        ("api", "dynamodb:UpdateItem"),
        ("api", "dynamodb:Query"),
        ("api", "dynamodb:GetItem"),
        ("worker", "dynamodb:PutItem"),
        ("worker", "dynamodb:UpdateItem"),
    }
    assert not [g for g in report.unexercised if g.resource == DEPLOYED_TABLE_ARN]
    # ... and no grant names the table's items by a wildcard or another table by this one's name
    assert not [g for g in report.exercised + report.unexercised if "UsageTable" in g.resource and g.resource != DEPLOYED_TABLE_ARN]


def test_a_refused_reservation_is_a_call_the_role_allows_too(template: dict[str, Any]) -> None:
    # The reservation that finds no room is the same TransactWriteItems (a 429 costs no other permission)
    class Full(_Recording):
        def transact_write_items(self, **params: Any) -> dict[str, Any]:
            from botocore.exceptions import ClientError

            self.calls.append(("TransactWriteItems", params))
            reasons = [{"Code": "ConditionalCheckFailed", "Item": {"images": {"N": "10"}}}]
            raise ClientError({"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons}, "TransactWriteItems")

    client = Full()
    budgets = BudgetsDocument.model_validate({"per_key": {"images_per_month": 10}})
    with pytest.raises(InsufficientQuotaError):
        BudgetGuard(client, LOCAL_TABLE, budgets).reserve(caller=CALLER, end_user=None, images=1, estimate_usd=None)  # type: ignore[arg-type]
    calls = [_as_recorded("worker", operation, params) for operation, params in client.calls]
    assert iam_eval.evaluate(calls, iam_eval.load_deployment(template=template)).ok


# --- the daily spend alarm -----------------------------------------------------------------------------------------


def _emitted_cost_metrics(environment: dict[str, str]) -> list[tuple[str, str, dict[str, str]]]:
    """What a function with ``environment`` publishes for one priced generation (imagegen/usage/meter.py count_cost):
    the EMF records Powertools prints, as (namespace, metric, dimensions)."""
    script = (
        "from decimal import Decimal\n"
        "from imagegen.observability import metrics\n"
        "from imagegen.usage.meter import count_cost\n"
        "from imagegen.usage.records import UsageRecord\n"
        "count_cost(UsageRecord(id='r', at=0, caller='key-0123456789abcdef', end_user=None, model='gpt-image-1',\n"
        "    provider='openai', size='1024x1024', quality='low', images=1, source='image.generation', cost_usd=Decimal('0.011')))\n"
        "metrics.flush_metrics()\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("POWERTOOLS_")}
    env.update(environment)
    env["POWERTOOLS_METRICS_DISABLED"] = "0"
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    found = []
    for record in (json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{") and '"_aws"' in line):
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                for names in directive["Dimensions"]:
                    found.append((directive["Namespace"], metric["Name"], {name: record[name] for name in names}))
                    assert record[metric["Name"]] in ([0.011], 0.011)
    return found


def test_the_daily_spend_alarm_sums_the_cost_the_generating_functions_publish(template: dict[str, Any]) -> None:
    alarm = template["Resources"]["DailySpendAlarm"]
    props = alarm["Properties"]
    watched = (props["Namespace"], props["MetricName"], {d["Name"]: d["Value"] for d in props["Dimensions"]})

    for function in ("ApiFunction", "WorkerFunction"):
        variables = {**template["Globals"]["Function"]["Environment"]["Variables"], **_variables(template, function)}
        powertools = {key: value for key, value in variables.items() if key.startswith("POWERTOOLS_") and isinstance(value, str)}
        emitted = _emitted_cost_metrics(powertools)
        # CloudWatch matches the whole dimension set: the alarm watches the deployment's total, not the per-model one
        assert emitted.count(watched) == 1, (function, emitted)
        assert any(dimensions.keys() == {"model", "service"} for _, name, dimensions in emitted if name == "CostUSD")
    assert (props["Statistic"], props["Period"], props["EvaluationPeriods"]) == ("Sum", 86400, 1)
    assert (props["Threshold"], props["ComparisonOperator"]) == ({"Ref": "DailySpendAlarmUsd"}, "GreaterThanOrEqualToThreshold")
    assert props["TreatMissingData"] == "notBreaching"  # a day without a priced generation is no alarm
    # The other alarms notify nobody (no AlarmActions): neither does this one
    others = [
        r["Properties"] for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm" and name != "DailySpendAlarm"
    ]
    assert {str(o.get("AlarmActions")) for o in others} == {str(props.get("AlarmActions"))}


@pytest.mark.parametrize(("value", "deployed"), [(None, False), (0, False), (25, True), (0.5, True)])
def test_the_daily_spend_alarm_exists_only_with_a_threshold(template: dict[str, Any], value: float | None, deployed: bool) -> None:
    parameter = template["Parameters"]["DailySpendAlarmUsd"]
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"]) == ("Number", 0, 0)
    document = sam_transform(template, {} if value is None else {"DailySpendAlarmUsd": value})
    alarm = document["Resources"]["DailySpendAlarm"]

    assert _condition({"Condition": alarm["Condition"]}, document["Conditions"]) is deployed
