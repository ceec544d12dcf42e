"""template.yaml: SAM validation, the security properties we promise, and a real arm64 build.

Everything runs offline except the build test, which downloads the layer's wheels from PyPI. Some checks read
the template as written (what we declare), others the template after the SAM transform (what CloudFormation
gets: generated roles, the bucket notification, the dependency graph).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.sam_template import load_template, sam_transform
from imagegen.settings import Settings

pytestmark = pytest.mark.infra

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
VENV_BIN = Path(sys.executable).parent

# sam needs a region and credentials to exist even when it never calls AWS.
OFFLINE_AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "offline",
    "AWS_SECRET_ACCESS_KEY": "offline",
    "SAM_CLI_TELEMETRY": "0",
}

ELF_MACHINE_AARCH64 = 0xB7

API_ROUTES = {
    ("POST", "/v1/images/generations"),
    ("POST", "/v1/images/edits"),
    ("POST", "/v1/images/variations"),
    ("GET", "/v1/models"),
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/v1/images/jobs/{job_id}"),
    ("GET", "/v1/organization/usage/images"),
}
# Routes the API may serve besides the required ones (the browser playground).
OPTIONAL_API_ROUTES = {("GET", "/")}

FUNCTIONS = ("ApiFunction", "WorkerFunction", "S3TriggerFunction")
# The functions that call image providers (the S3 trigger only queues request objects for the worker).
GENERATORS = ("ApiFunction", "WorkerFunction")
# ImagesBucket's BucketName: a function triggered by the bucket must build the name, not !Ref the bucket.
BUCKET_NAME = "${AWS::StackName}-images-${AWS::AccountId}-${AWS::Region}"
BUCKET_OBJECTS = f"arn:${{AWS::Partition}}:s3:::{BUCKET_NAME}"
# The only managed policies a generated role may carry (logs, X-Ray): nothing that grants S3, DynamoDB or SQS.
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
DATA_SERVICES = ("s3:", "dynamodb:", "sqs:")
# Model access: Bedrock invoke and the registry document, each granted only when configured.
MODEL_SERVICES = ("bedrock:", "ssm:")


def _sam() -> str:
    sam = shutil.which("sam", path=str(VENV_BIN)) or shutil.which("sam")
    if sam is None:
        pytest.skip("aws-sam-cli is not installed (make dev)")
    return sam


def _sam_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"AWS_PROFILE", "AWS_SESSION_TOKEN"}}
    env.update(OFFLINE_AWS_ENV)
    # The layer Makefile runs `$(PYTHON) -m pip`: use the interpreter running the tests.
    env["PYTHON"] = sys.executable
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run_sam(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_sam(), *args],
        cwd=REPO_ROOT,
        env=_sam_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = template["Resources"]
    return res


def _props(resources: dict[str, Any], name: str) -> dict[str, Any]:
    props: dict[str, Any] = resources[name]["Properties"]
    return props


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _policy_statements(policies: list[Any]) -> Iterator[dict[str, Any]]:
    """Every inline statement of a SAM Policies list, looking through Fn::If branches."""
    for policy in policies:
        if isinstance(policy, dict) and "Fn::If" in policy:
            _, when_true, when_false = policy["Fn::If"]
            yield from _policy_statements([when_true, when_false])
        elif isinstance(policy, dict) and "Statement" in policy:
            yield from _as_list(policy["Statement"])
        elif policy == {"Ref": "AWS::NoValue"}:
            continue
        else:
            pytest.fail(f"unexpected policy entry (use inline statements): {policy!r}")


def _statements(resources: dict[str, Any], function: str) -> list[dict[str, Any]]:
    return list(_policy_statements(_props(resources, function).get("Policies", [])))


def _actions(statement: dict[str, Any]) -> set[str]:
    return set(_as_list(statement["Action"]))


def _granted(resources: dict[str, Any], function: str, service: str) -> dict[str, set[str]]:
    """``{resource (as written): actions}`` of one service (``"s3:"``, ...) that a function's policies allow."""
    granted: dict[str, set[str]] = {}
    for statement in _statements(resources, function):
        assert statement["Effect"] == "Allow"
        actions = {a for a in _actions(statement) if a.startswith(service)}
        for resource in _as_list(statement["Resource"]) if actions else []:
            granted.setdefault(_text(resource), set()).update(actions)
    return granted


def _text(value: Any) -> str:
    """A resource as a comparable string: the Fn::Sub text, "Ref:X", "GetAtt:X.Attr" or the literal."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return str(sub[0] if isinstance(sub, list) else sub)
    if isinstance(value, dict) and "Ref" in value:
        return f"Ref:{value['Ref']}"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return "GetAtt:" + (".".join(target) if isinstance(target, list) else str(target))
    return str(value)


@pytest.fixture(scope="module")
def transformed(template: dict[str, Any]) -> dict[str, Any]:
    """What CloudFormation deploys with the default parameters (AuthMode ApiKey), offline."""
    return sam_transform(template)


@pytest.fixture(scope="module")
def transformed_iam(template: dict[str, Any]) -> dict[str, Any]:
    """What CloudFormation deploys with AuthMode IAM."""
    return sam_transform(template, {"AuthMode": "IAM"})


def _role_statements(policies: list[Any]) -> Iterator[dict[str, Any]]:
    """Every statement of an AWS::IAM::Role's inline Policies, looking through Fn::If branches."""
    for policy in policies:
        if isinstance(policy, dict) and "Fn::If" in policy:
            _, when_true, when_false = policy["Fn::If"]
            yield from _role_statements([when_true, when_false])
        elif isinstance(policy, dict) and "PolicyDocument" in policy:
            yield from _as_list(policy["PolicyDocument"]["Statement"])
        elif policy != {"Ref": "AWS::NoValue"}:
            pytest.fail(f"unexpected role policy: {policy!r}")


def _references(node: Any) -> set[str]:
    """Names a template fragment refers to: Ref, Fn::GetAtt and ${...} in Fn::Sub (parameters and pseudo
    parameters included; callers keep the resource names)."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add((value[0] if isinstance(value, list) else str(value)).split(".")[0])
            elif key == "Fn::Sub":
                text, variables = (value[0], value[1]) if isinstance(value, list) else (value, {})
                local = set(variables)
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", text)} - local
                found |= _references(variables)
            else:
                found |= _references(value)
    return found


def _dependency_cycle(resources: dict[str, Any]) -> list[str] | None:
    """A cycle in CloudFormation's dependency graph (references and DependsOn), or None."""
    graph = {
        name: (_references(resource.get("Properties", {})) | set(_as_list(resource.get("DependsOn", [])))) & resources.keys()
        for name, resource in resources.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_sam_validate_lint_passes() -> None:
    # Given the template and dummy credentials / When sam validates it with cfn-lint
    result = _run_sam("validate", "--lint", "--template-file", str(TEMPLATE), timeout=120)

    # Then it is clean
    assert result.returncode == 0, result.stdout + result.stderr


def test_functions_run_python312_on_arm64_with_tracing_and_the_layer(template: dict[str, Any]) -> None:
    function_globals = template["Globals"]["Function"]

    assert function_globals["Runtime"] == "python3.12"
    assert function_globals["Architectures"] == ["arm64"]
    assert function_globals["Tracing"] == "Active"
    assert {"Ref": "CommonLayer"} in function_globals["Layers"]
    assert function_globals["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == "imagegen"


def test_common_layer_is_built_for_arm64_by_its_makefile(resources: dict[str, Any]) -> None:
    layer = resources["CommonLayer"]

    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["ContentUri"] == "layers/common"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert (REPO_ROOT / "layers/common/Makefile").read_text().count("build-CommonLayer:") == 1


def test_images_bucket_blocks_all_public_access(resources: dict[str, Any]) -> None:
    block = _props(resources, "ImagesBucket")["PublicAccessBlockConfiguration"]

    assert block == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert _props(resources, "ImagesBucket")["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_images_bucket_encrypts_at_rest(resources: dict[str, Any]) -> None:
    rules = _props(resources, "ImagesBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"]

    assert [rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] for rule in rules] in (["AES256"], ["aws:kms"])


def test_images_bucket_policy_denies_plain_http(resources: dict[str, Any]) -> None:
    # Given the policy attached to the images bucket
    (policy,) = (
        res["Properties"]
        for res in resources.values()
        if res["Type"] == "AWS::S3::BucketPolicy" and res["Properties"]["Bucket"] == {"Ref": "ImagesBucket"}
    )

    # Then some statement denies every S3 action on the bucket and its objects without TLS
    tls_denies = [
        statement
        for statement in _as_list(policy["PolicyDocument"]["Statement"])
        if statement["Effect"] == "Deny"
        and statement["Principal"] == "*"
        and statement["Action"] == "s3:*"
        and str(statement["Condition"]["Bool"]["aws:SecureTransport"]).lower() == "false"
    ]
    assert len(tls_denies) == 1
    assert _as_list(tls_denies[0]["Resource"]) == [
        {"Fn::GetAtt": ["ImagesBucket", "Arn"]},
        {"Fn::Sub": "${ImagesBucket.Arn}/*"},
    ]


def test_images_results_and_requests_expire_and_incomplete_uploads_are_aborted(resources: dict[str, Any]) -> None:
    rules = _props(resources, "ImagesBucket")["LifecycleConfiguration"]["Rules"]

    expiring = {
        rule.get("Prefix")
        for rule in rules
        if rule["Status"] == "Enabled" and rule.get("ExpirationInDays") == {"Ref": "ImageRetentionDays"}
    }
    assert {"images/", "results/", "requests/"} <= expiring
    assert any(rule["Status"] == "Enabled" and "AbortIncompleteMultipartUpload" in rule for rule in rules)


def test_api_function_touches_only_images_prefix_its_jobs_and_its_secret(resources: dict[str, Any]) -> None:
    # Given every statement the API function's role may get
    statements = _statements(resources, "ApiFunction")

    # Then S3 access is object-level, on images/ and (writes only) inputs/, never s3:* nor "*"
    assert _granted(resources, "ApiFunction", "s3:") == {
        "${ImagesBucket.Arn}/images/*": {"s3:PutObject", "s3:GetObject", "s3:DeleteObject"},
        "${ImagesBucket.Arn}/inputs/*": {"s3:PutObject", "s3:DeleteObject"},
    }
    # And it creates and reads jobs but never updates or deletes them (the worker updates, TTL deletes); usage:
    # tests/infrastructure/test_usage_template.py
    assert _granted(resources, "ApiFunction", "dynamodb:") == {
        "GetAtt:JobsTable.Arn": {"dynamodb:PutItem", "dynamodb:GetItem"},
        "GetAtt:IdempotencyTable.Arn": {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"},
        "GetAtt:UsageTable.Arn": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:GetItem"},
    }
    # And it only sends to the jobs queue
    assert _granted(resources, "ApiFunction", "sqs:") == {"GetAtt:JobsQueue.Arn": {"sqs:SendMessage"}}

    # And the secret is readable only when configured, and only that one
    others = [s for s in statements if not any(a.startswith((*DATA_SERVICES, *MODEL_SERVICES)) for a in _actions(s))]
    assert others == [
        {
            "Sid": "ReadOpenAIApiKey",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": {"Ref": "OpenAIApiKeySecretArn"},
        },
        {
            "Sid": "ReadAzureOpenAIApiKey",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": {"Ref": "AzureOpenAIApiKeySecretArn"},
        },
        *(
            {
                "Sid": f"Read{name}ApiKey",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": {"Ref": f"{name}ApiKeySecretArn"},
            }
            for name in KEYED_PROVIDERS.values()
        ),
    ]
    (conditional,) = (p for p in _props(resources, "ApiFunction")["Policies"] if p.get("Fn::If", [None])[0] == "HasOpenAIKey")
    assert conditional["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    assert all(s.get("Resource") != "*" for s in statements)


def test_api_function_environment(template: dict[str, Any], resources: dict[str, Any]) -> None:
    variables = _props(resources, "ApiFunction")["Environment"]["Variables"]

    assert variables["IMAGES_BUCKET"] == {"Ref": "ImagesBucket"}
    assert variables["PRESIGN_TTL_SECONDS"] == {"Ref": "PresignTtlSeconds"}
    assert variables["OPENAI_BASE_URL"] == {"Ref": "OpenAIBaseUrl"}
    # Optional settings are left unset rather than set to "" when the parameter is empty
    assert variables["DEFAULT_MODEL"]["Fn::If"][0] == "HasDefaultModel"
    assert variables["OPENAI_API_KEY_SECRET_ARN"] == {"Fn::If": ["HasOpenAIKey", {"Ref": "OpenAIApiKeySecretArn"}, {"Ref": "AWS::NoValue"}]}
    # Async jobs are on: both the table and the queue are set
    assert variables["JOBS_TABLE"] == {"Ref": "JobsTable"}
    assert variables["JOBS_QUEUE_URL"] == {"Ref": "JobsQueue"}
    assert variables["JOB_TTL_DAYS"] == {"Ref": "JobTtlDays"}
    ttl = template["Parameters"]["PresignTtlSeconds"]
    assert (ttl["Default"], ttl["MinValue"], ttl["MaxValue"]) == (3600, 60, 43200)


def test_api_function_serves_the_documented_routes(resources: dict[str, Any]) -> None:
    function = _props(resources, "ApiFunction")
    events = function["Events"].values()
    routes = {(e["Properties"]["Method"].upper(), e["Properties"]["Path"]) for e in events}

    # API Gateway REST cuts buffered requests at 29 s; only a streaming deployment (test_streaming_template.py) waits longer
    assert function["Timeout"] == {"Fn::If": ["StreamResponses", {"Ref": "StreamingTimeoutSeconds"}, 29]}
    assert API_ROUTES <= routes <= API_ROUTES | OPTIONAL_API_ROUTES
    assert all(e["Type"] == "Api" and e["Properties"]["RestApiId"] == {"Ref": "ImageApi"} for e in events)
    assert _props(resources, "ImageApi")["StageName"] == {"Ref": "Stage"}


def test_function_environments_name_only_real_settings(resources: dict[str, Any]) -> None:
    # Given the variables the core reads (imagegen.settings), and Powertools' own
    known = {str(field.validation_alias) for field in Settings.model_fields.values()}
    # ... and the one the Lambda runtime reads, which only the API function's streaming loop needs
    runtime = {"ApiFunction": {"AWS_LAMBDA_EXEC_WRAPPER"}}

    for name in FUNCTIONS:
        variables = _props(resources, name)["Environment"]["Variables"]
        # Then a function sets no variable nobody reads (a typo would silently fall back to a default)
        assert set(variables) <= known | runtime.get(name, set()), name
        assert "IMAGES_BUCKET" in variables


def test_jobs_queue_outlasts_a_worker_run_and_redrives_to_the_dead_letter_queue(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    queue = _props(resources, "JobsQueue")
    dlq = _props(resources, "JobsDeadLetterQueue")
    worker_timeout = _props(resources, "WorkerFunction").get("Timeout", template["Globals"]["Function"]["Timeout"])

    # Lambda's rule for SQS event sources: a message stays hidden while a worker may still run it
    assert worker_timeout == 300
    assert int(queue["VisibilityTimeout"]) >= 6 * int(worker_timeout)
    # After MaxReceiveCount deliveries a message goes to the DLQ, and the worker knows the same count
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert _props(resources, "WorkerFunction")["Environment"]["Variables"]["MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}
    assert template["Parameters"]["MaxReceiveCount"]["Default"] == 3
    # The worker knows its longest run (a job begun less than that ago is running: a duplicate is not run twice),
    # and a crashed run's message comes back only after it (so that run's job is then stale and runs again)
    run_seconds = int(_props(resources, "WorkerFunction")["Environment"]["Variables"]["JOB_RUN_SECONDS"])
    assert run_seconds == int(worker_timeout) < int(queue["VisibilityTimeout"])
    # The DLQ keeps a message longer than the source queue does (its enqueue time carries over), 14 days
    assert int(dlq["MessageRetentionPeriod"]) == 14 * 24 * 3600
    assert int(dlq["MessageRetentionPeriod"]) > int(queue.get("MessageRetentionPeriod", 4 * 24 * 3600))
    assert "RedrivePolicy" not in dlq


def test_queues_are_encrypted_and_refuse_plain_http(resources: dict[str, Any]) -> None:
    queues = sorted(name for name, res in resources.items() if res["Type"] == "AWS::SQS::Queue")
    assert {"JobsQueue", "JobsDeadLetterQueue", "S3TriggerDeadLetterQueue"} <= set(queues)
    for name in queues:
        assert _props(resources, name)["SqsManagedSseEnabled"] is True, name

    (policy,) = (res["Properties"] for res in resources.values() if res["Type"] == "AWS::SQS::QueuePolicy")
    assert sorted(_text(q) for q in policy["Queues"]) == sorted(f"Ref:{name}" for name in queues)
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "sqs:*")
    assert str(deny["Condition"]["Bool"]["aws:SecureTransport"]).lower() == "false"
    assert {_text(r) for r in _as_list(deny["Resource"])} == {f"GetAtt:{name}.Arn" for name in queues}


def test_s3_trigger_failures_land_in_an_alarmed_dead_letter_queue(resources: dict[str, Any]) -> None:
    # S3 invokes the trigger asynchronously: after Lambda's retries a failed event is kept, not dropped
    assert _props(resources, "S3TriggerFunction")["DeadLetterQueue"] == {
        "Type": "SQS",
        "TargetArn": {"Fn::GetAtt": ["S3TriggerDeadLetterQueue", "Arn"]},
    }
    assert _props(resources, "S3TriggerDeadLetterQueue")["MessageRetentionPeriod"] == 1209600
    alarms = [
        res["Properties"]
        for res in resources.values()
        if res["Type"] == "AWS::CloudWatch::Alarm"
        and res["Properties"]["Namespace"] == "AWS/SQS"
        and res["Properties"]["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["S3TriggerDeadLetterQueue", "QueueName"]}}]
    ]
    assert len(alarms) == 1


def test_worker_is_fed_by_the_jobs_queue_with_partial_batch_failures_and_a_concurrency_cap(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    # Given every event source mapping of the worker (its alias with SnapStart: tests/infrastructure/test_snapstart_template.py)
    worker_names = ({"Ref": "WorkerFunction"}, {"Fn::If": ["UseSnapStart", {"Ref": "WorkerFunction.Alias"}, {"Ref": "WorkerFunction"}]})
    mappings = [
        res["Properties"]
        for res in resources.values()
        if res["Type"] == "AWS::Lambda::EventSourceMapping" and res["Properties"]["FunctionName"] in worker_names
    ]

    # Then exactly one, on the jobs queue, reporting failed items only, capped at WorkerMaxConcurrency
    (mapping,) = mappings
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaxConcurrency"}}
    assert "MaximumBatchingWindowInSeconds" not in mapping  # else the visibility rule needs it added
    # One message per invocation (the fairness choice of #12: BatchSize 1 with the concurrency cap, no per-message
    # budgets): Lambda hands a batch to one invocation, which runs its messages within one Timeout, so a slow message
    # in a batch of five would leave the others too little time and burn their delivery attempts
    assert mapping["BatchSize"] == 1
    concurrency = template["Parameters"]["WorkerMaxConcurrency"]
    assert (concurrency["Default"], concurrency["MinValue"]) == (5, 2)  # SQS refuses a maximum below 2
    # And no SAM SQS event besides it (that would attach AWSLambdaSQSQueueExecutionRole: every queue)
    assert "Events" not in _props(resources, "WorkerFunction")
    worker = resources["WorkerFunction"]
    assert (worker["Metadata"]["BuildMethod"], worker["Properties"]["CodeUri"], worker["Properties"]["Handler"]) == (
        "makefile",
        "functions/worker",
        "app.lambda_handler",
    )


def test_worker_permissions(resources: dict[str, Any]) -> None:
    # It writes images and manifests, never reads them (the API answers jobs); reads an edit's inputs and stores the
    # ones it fetches; claims and records jobs, never reads one
    assert _granted(resources, "WorkerFunction", "s3:") == {
        "${ImagesBucket.Arn}/images/*": {"s3:PutObject", "s3:DeleteObject"},
        "${ImagesBucket.Arn}/inputs/*": {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"},
        "${ImagesBucket.Arn}/results/*": {"s3:PutObject"},
    }
    assert _granted(resources, "WorkerFunction", "dynamodb:") == {
        "GetAtt:JobsTable.Arn": {"dynamodb:UpdateItem", "dynamodb:PutItem"},
        "GetAtt:UsageTable.Arn": {"dynamodb:UpdateItem", "dynamodb:PutItem"},  # test_usage_template.py
    }
    # It polls the jobs queue (the event source mapping runs as this role), backs a rate-limited message off by its
    # Retry-After (ChangeMessageVisibility, on that queue only), and sends nothing
    assert _granted(resources, "WorkerFunction", "sqs:") == {
        "GetAtt:JobsQueue.Arn": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
    }
    variables = _props(resources, "WorkerFunction")["Environment"]["Variables"]
    assert variables["JOBS_TABLE"] == {"Ref": "JobsTable"}
    assert variables["JOB_TTL_DAYS"] == {"Ref": "JobTtlDays"}
    # ChangeMessageVisibility takes the queue's URL
    assert variables["JOBS_QUEUE_URL"] == {"Ref": "JobsQueue"}


def test_jobs_table_is_on_demand_expiring_recoverable_and_encrypted(resources: dict[str, Any]) -> None:
    table = _props(resources, "JobsTable")

    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    # imagegen.jobs writes epoch seconds to expires_at
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True


def test_s3_trigger_fires_only_for_json_request_objects(resources: dict[str, Any]) -> None:
    # Given the S3 events of every function
    s3_events = {
        (name, event_name): event["Properties"]
        for name in FUNCTIONS
        for event_name, event in _props(resources, name).get("Events", {}).items()
        if event["Type"] == "S3"
    }

    # Then only the trigger listens, to object creation under requests/ ending in .json
    (((function, _), event),) = s3_events.items()
    assert function == "S3TriggerFunction"
    assert event["Bucket"] == {"Ref": "ImagesBucket"}
    assert _as_list(event["Events"]) == ["s3:ObjectCreated:*"]
    rules = {rule["Name"].lower(): rule["Value"] for rule in event["Filter"]["S3Key"]["Rules"]}
    assert rules == {"prefix": "requests/", "suffix": ".json"}


def test_s3_trigger_names_the_bucket_without_referencing_it(resources: dict[str, Any]) -> None:
    # The bucket's notification depends on the trigger: any reference back to the bucket is a cycle
    assert _props(resources, "ImagesBucket")["BucketName"] == {"Fn::Sub": BUCKET_NAME}
    trigger = _props(resources, "S3TriggerFunction")
    assert trigger["Environment"]["Variables"]["IMAGES_BUCKET"] == {"Fn::Sub": BUCKET_NAME}
    assert "ImagesBucket" not in _references({k: v for k, v in trigger.items() if k != "Events"})
    # It reads an object and sends a message: it does not need a generation's time
    assert trigger["Timeout"] <= 60


def test_s3_trigger_reads_requests_queues_them_and_can_never_write_there(resources: dict[str, Any]) -> None:
    # It reads request objects and answers malformed ones in results/: nothing else in the bucket
    assert _granted(resources, "S3TriggerFunction", "s3:") == {
        f"{BUCKET_OBJECTS}/requests/*": {"s3:GetObject"},
        f"{BUCKET_OBJECTS}/results/*": {"s3:PutObject"},
    }
    # And it queues them for the worker, on the jobs queue only, with the queue's URL in its environment
    assert _granted(resources, "S3TriggerFunction", "sqs:") == {"GetAtt:JobsQueue.Arn": {"sqs:SendMessage"}}
    assert _props(resources, "S3TriggerFunction")["Environment"]["Variables"]["JOBS_QUEUE_URL"] == {"Ref": "JobsQueue"}
    # And it generates nothing: no table, no provider, no secret, no model registry
    assert _granted(resources, "S3TriggerFunction", "dynamodb:") == {}
    statements = _statements(resources, "S3TriggerFunction")
    assert not [a for s in statements for a in _actions(s) if a.startswith(("secretsmanager:", "bedrock:", "ssm:"))]
    variables = _props(resources, "S3TriggerFunction")["Environment"]["Variables"]
    assert set(variables) == {"IMAGES_BUCKET", "JOBS_QUEUE_URL"}


def test_every_function_reads_the_openai_secret_only_when_configured(resources: dict[str, Any]) -> None:
    for name in GENERATORS:
        policies = _props(resources, name)["Policies"]
        (conditional,) = (p for p in policies if isinstance(p, dict) and p.get("Fn::If", [None])[0] == "HasOpenAIKey")
        condition, when_set, when_unset = conditional["Fn::If"]
        assert (condition, when_unset) == ("HasOpenAIKey", {"Ref": "AWS::NoValue"}), name
        assert when_set["Statement"] == [
            {
                "Sid": "ReadOpenAIApiKey",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": {"Ref": "OpenAIApiKeySecretArn"},
            }
        ], name


# The providers served over httpx with a key of their own: setting prefix -> template name.
KEYED_PROVIDERS = {"GOOGLE": "Google", "BFL": "Bfl", "STABILITY": "Stability"}


@pytest.mark.parametrize(("variable", "name"), KEYED_PROVIDERS.items())
def test_every_function_reads_a_keyed_providers_secret_only_when_configured(resources: dict[str, Any], variable: str, name: str) -> None:
    for function in GENERATORS:
        props = _props(resources, function)
        (conditional,) = (p for p in props["Policies"] if isinstance(p, dict) and p.get("Fn::If", [None])[0] == f"Has{name}Key")
        _, when_set, when_unset = conditional["Fn::If"]
        assert when_unset == {"Ref": "AWS::NoValue"}, function
        assert when_set["Statement"] == [
            {
                "Sid": f"Read{name}ApiKey",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": {"Ref": f"{name}ApiKeySecretArn"},
            }
        ], function
        variables = props["Environment"]["Variables"]
        assert variables[f"{variable}_API_KEY_SECRET_ARN"] == {
            "Fn::If": [f"Has{name}Key", {"Ref": f"{name}ApiKeySecretArn"}, {"Ref": "AWS::NoValue"}]
        }, function


def test_every_function_reads_the_azure_openai_secret_only_when_configured_and_gets_its_settings(
    resources: dict[str, Any],
) -> None:
    for name in GENERATORS:
        props = _props(resources, name)
        (conditional,) = (p for p in props["Policies"] if isinstance(p, dict) and p.get("Fn::If", [None])[0] == "HasAzureOpenAIKey")
        _, when_set, when_unset = conditional["Fn::If"]
        assert when_unset == {"Ref": "AWS::NoValue"}, name
        assert when_set["Statement"] == [
            {
                "Sid": "ReadAzureOpenAIApiKey",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": {"Ref": "AzureOpenAIApiKeySecretArn"},
            }
        ], name
        variables = props["Environment"]["Variables"]
        assert variables["AZURE_OPENAI_DEPLOYMENTS"] == {
            "Fn::If": ["HasAzureOpenAI", {"Ref": "AzureOpenAIDeployments"}, {"Ref": "AWS::NoValue"}]
        }, name
        assert variables["AZURE_OPENAI_ENDPOINT"]["Fn::If"][0] == "HasAzureOpenAI", name
        assert variables["AZURE_OPENAI_API_VERSION"] == {
            "Fn::If": ["HasAzureOpenAI", {"Ref": "AzureOpenAIApiVersion"}, {"Ref": "AWS::NoValue"}]
        }, name
        assert variables["AZURE_OPENAI_API_KEY_SECRET_ARN"]["Fn::If"][0] == "HasAzureOpenAIKey", name


def test_the_azure_api_version_parameter_defaults_to_the_codes_default(template: dict[str, Any]) -> None:
    from imagegen.settings import AZURE_OPENAI_DEFAULT_API_VERSION

    assert template["Parameters"]["AzureOpenAIApiVersion"]["Default"] == AZURE_OPENAI_DEFAULT_API_VERSION


def test_every_function_reads_only_the_registry_parameter_and_invokes_bedrock_only_when_configured(
    resources: dict[str, Any],
) -> None:
    for name in GENERATORS:
        variables = _props(resources, name)["Environment"]["Variables"]
        assert variables["MODEL_REGISTRY_PARAMETER"]["Fn::If"][0] == "HasModelRegistryParameter", name
        branches = {p["Fn::If"][0]: p["Fn::If"] for p in _props(resources, name)["Policies"] if "Fn::If" in p}
        # bedrock:InvokeModel only with BedrockModels or BedrockInferenceProfiles set (what it allows:
        # test_bedrock_grants_...)
        for condition in ("HasBedrockModels", "HasBedrockProfiles"):
            _, bedrock, no_bedrock = branches[condition]
            assert no_bedrock == {"Ref": "AWS::NoValue"}
            assert {action for statement in bedrock["Statement"] for action in _actions(statement)} == {"bedrock:InvokeModel"}
        # And ssm:GetParameter only with a registry parameter, on exactly that parameter
        _, ssm, no_ssm = branches["HasModelRegistryParameter"]
        assert no_ssm == {"Ref": "AWS::NoValue"}
        assert ssm["Statement"] == [
            {
                "Sid": "ReadModelRegistry",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${ModelRegistryParameter}"},
            }
        ], name


# What the deployment's pseudo parameters are, for evaluating its policies.
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::URLSuffix": "amazonaws.com"}


def _pseudo_resolved(node: Any) -> Any:
    """``node`` with Ref and Fn::Sub of pseudo parameters replaced by PSEUDO's values (what CloudFormation does)."""
    if isinstance(node, list):
        return [_pseudo_resolved(item) for item in node]
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in PSEUDO:
            return PSEUDO[node["Ref"]]
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            return re.sub(r"\$\{(AWS::[A-Za-z]+)\}", lambda match: PSEUDO[match.group(1)], node["Fn::Sub"])
        return {key: _pseudo_resolved(value) for key, value in node.items()}
    return node


def _arn_like(pattern: str, arn: str) -> bool:
    """IAM's ARN match: segment by segment (partition, service, region, account, resource), ``*`` and ``?`` as
    wildcards that do not span a segment."""
    import fnmatch

    left, right = pattern.split(":", 5), arn.split(":", 5)
    return len(left) == len(right) == 6 and all(fnmatch.fnmatchcase(r, p) for p, r in zip(left, right, strict=True))


def _allows(statements: list[dict[str, Any]], action: str, resource: str, context: dict[str, str]) -> bool:
    """IAM's answer for an identity policy of Allow statements (there is no Deny here): some statement matches the
    action, the resource and every condition (a condition on a key the request lacks does not match)."""
    import fnmatch

    operators = {
        "StringEquals": lambda pattern, value: pattern == value,
        "StringLike": lambda pattern, value: fnmatch.fnmatchcase(value, pattern),
        "ArnLike": _arn_like,
    }
    for statement in statements:
        assert statement["Effect"] == "Allow" and not {"NotAction", "NotResource"} & set(statement)
        if not any(fnmatch.fnmatchcase(action, a) for a in _as_list(statement["Action"])):
            continue
        if not any(_arn_like(pattern, resource) for pattern in _as_list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        if all(
            key in context and any(operators[operator](str(pattern), context[key]) for pattern in _as_list(patterns))
            for operator, keys in conditions.items()
            for key, patterns in keys.items()
        ):
            return True
    return False


def _role_policy(document: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = document["Resources"][f"{function}Role"]["Properties"]
    return [_pseudo_resolved(statement) for statement in _role_statements(role.get("Policies", []))]


REGION, ACCOUNT = PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
HERE = {"aws:RequestedRegion": REGION}
# A deployment serving one model directly, one through its US profile and one through its global profile.
BEDROCK_DEPLOYMENT = {
    "BedrockModels": "amazon.nova-canvas-v1:0",
    "BedrockInferenceProfiles": "us.stability.sd3-5-large-v1:0,global.stability.stable-image-ultra-v1:1",
}


def _model(where: str, model_id: str) -> str:
    return f"arn:aws:bedrock:{where}::foundation-model/{model_id}"


def _profile(profile_id: str, where: str = REGION) -> str:
    return f"arn:aws:bedrock:{where}:{ACCOUNT}:inference-profile/{profile_id}"


def _bedrock_calls() -> tuple[list[tuple[str, str, dict[str, str]]], list[tuple[str, str, dict[str, str]]]]:
    """(allowed, denied) calls for BEDROCK_DEPLOYMENT, as (action, resource, request context). Allowed: what AWS documents
    for each: the model itself in this region; a profile's call is authorized on the profile in this region and on
    the model where the profile routes it (any region of its geography, or no named region for a global profile),
    with the profile's ARN in bedrock:InferenceProfileArn. Denied: any other model or profile, a served model in
    another region, a profile's model directly or through another profile, another action."""
    sd35, ultra = _profile("us.stability.sd3-5-large-v1:0"), _profile("global.stability.stable-image-ultra-v1:1")
    invoke = "bedrock:InvokeModel"
    allowed = [
        (invoke, _model(REGION, "amazon.nova-canvas-v1:0"), HERE),
        (invoke, sd35, HERE),
        (invoke, _model(REGION, "stability.sd3-5-large-v1:0"), {**HERE, "bedrock:InferenceProfileArn": sd35}),
        (
            invoke,
            _model("us-west-2", "stability.sd3-5-large-v1:0"),
            {"aws:RequestedRegion": "us-west-2", "bedrock:InferenceProfileArn": sd35},
        ),
        (invoke, ultra, HERE),
        (
            invoke,
            _model("", "stability.stable-image-ultra-v1:1"),
            {"aws:RequestedRegion": "unspecified", "bedrock:InferenceProfileArn": ultra},
        ),
    ]
    eu_sd35 = _profile("eu.stability.sd3-5-large-v1:0")
    denied = [
        (invoke, _model(REGION, "amazon.titan-image-generator-v2:0"), HERE),
        (invoke, _model("us-west-2", "amazon.nova-canvas-v1:0"), {"aws:RequestedRegion": "us-west-2"}),
        (invoke, _model(REGION, "stability.sd3-5-large-v1:0"), HERE),
        (invoke, eu_sd35, HERE),
        (invoke, _profile("us.stability.sd3-5-large-v1:0", "us-west-2"), {"aws:RequestedRegion": "us-west-2"}),
        (
            invoke,
            _model("eu-west-1", "stability.sd3-5-large-v1:0"),
            {"aws:RequestedRegion": "eu-west-1", "bedrock:InferenceProfileArn": eu_sd35},
        ),
        ("bedrock:InvokeModelWithResponseStream", _model(REGION, "amazon.nova-canvas-v1:0"), HERE),
        ("bedrock:CreateInferenceProfile", sd35, HERE),
    ]
    return allowed, denied


def _bedrock_statements(document: dict[str, Any], function: str) -> list[dict[str, Any]]:
    return [s for s in _role_policy(document, function) if any(a.startswith("bedrock:") for a in _as_list(s["Action"]))]


def test_bedrock_grants_exactly_the_served_models_and_inference_profiles(template: dict[str, Any]) -> None:
    from imagegen.specs import catalog

    # Given the deployment serving BEDROCK_DEPLOYMENT: the code gets both lists as one
    document = sam_transform(template, BEDROCK_DEPLOYMENT)
    allowed, denied = _bedrock_calls()
    for name in GENERATORS:
        policy = _role_policy(document, name)
        served = ",".join(BEDROCK_DEPLOYMENT.values())
        assert document["Resources"][name]["Properties"]["Environment"]["Variables"]["BEDROCK_MODELS"] == served
        # Then the calls AWS documents for them are allowed, and nothing else
        for action, resource, context in allowed:
            assert _allows(policy, action, resource, context), (name, resource, context)
        for action, resource, context in denied:
            assert not _allows(policy, action, resource, context), (name, action, resource, context)
        # And every ARN granted is one of those calls' (none names nothing, which the least-privilege evaluation
        # would list as a grant no test exercises)
        for statement in _bedrock_statements(document, name):
            for pattern in _as_list(statement["Resource"]):
                assert any(_arn_like(pattern, resource) for _, resource, _ in allowed), (name, pattern)

    # And every Bedrock model the code knows can be served either way, alone or together
    for spec in catalog().of("bedrock"):
        document = sam_transform(template, {"BedrockModels": spec.id, "BedrockInferenceProfiles": f"eu.{spec.id}"})
        policy = _role_policy(document, "WorkerFunction")
        eu = _profile(f"eu.{spec.id}")
        assert _allows(policy, "bedrock:InvokeModel", _model(REGION, spec.id), HERE), spec.id
        assert _allows(policy, "bedrock:InvokeModel", eu, HERE), spec.id
        assert _allows(policy, "bedrock:InvokeModel", _model("eu-west-3", spec.id), {"bedrock:InferenceProfileArn": eu}), spec.id
    for alone in ({"BedrockModels": "amazon.nova-canvas-v1:0"}, {"BedrockInferenceProfiles": "us.amazon.nova-canvas-v1:0"}):
        document = sam_transform(template, alone)
        assert document["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]["BEDROCK_MODELS"] == next(
            iter(alone.values())
        )
    # And without either no Bedrock call at all
    document = sam_transform(template)
    assert _bedrock_statements(document, "ApiFunction") == []
    assert "BEDROCK_MODELS" not in document["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]


def test_a_real_iam_evaluator_agrees_on_the_bedrock_grants(template: dict[str, Any]) -> None:
    # The same calls through @cloud-copilot/iam-simulate (devtools/iam_eval.py), which knows Bedrock's resource types
    from devtools import iam_eval

    document = sam_transform(template, BEDROCK_DEPLOYMENT)
    allowed, denied = _bedrock_calls()
    # It takes no foundation-model ARN without a region (a global profile's destination): that one is left to _allows
    calls = [(call, True) for call in allowed if ":bedrock:::" not in call[1]] + [(call, False) for call in denied]
    roles = {name: [("bedrock", {"Version": "2012-10-17", "Statement": _bedrock_statements(document, name)})] for name in GENERATORS}
    requests = [
        {
            "id": f"{name}/{index}",
            "role": name,
            "principal": f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}Role/{name}",
            "action": action,
            "resource": resource,
            "accountId": ACCOUNT,
            "context": context,
        }
        for name in GENERATORS
        for index, ((action, resource, context), _) in enumerate(calls)
    ]
    try:
        output = iam_eval.simulate(roles, requests)
    except iam_eval.EvaluatorUnavailable as missing:
        pytest.skip(f"the IAM evaluator is not available: {missing}")
    decisions = {result["id"]: result["decision"] for result in output["results"]}
    for name in GENERATORS:
        for index, ((action, resource, context), expected) in enumerate(calls):
            assert decisions[f"{name}/{index}"] == ("Allowed" if expected else "ImplicitlyDenied"), (name, action, resource, context)


def test_the_policy_evaluation_matches_arns_by_segment() -> None:
    # IAM: a wildcard matches within one ARN segment and may match an empty one; it never spans a colon
    assert _arn_like("arn:*:bedrock:*::foundation-model/*", "arn:aws:bedrock:::foundation-model/m")
    assert _arn_like("arn:*:bedrock:*:*:inference-profile/us.m", "arn:aws-us-gov:bedrock:us-gov-west-1:1:inference-profile/us.m")
    assert not _arn_like("arn:*:bedrock:*::foundation-model/m", "arn:aws:bedrock:us-east-1:123456789012:foundation-model/m")
    assert not _arn_like("arn:aws:bedrock:*", "arn:aws:bedrock:us-east-1::foundation-model/m")
    statement = {"Effect": "Allow", "Action": "bedrock:Invoke*", "Resource": "arn:aws:bedrock:*::foundation-model/*"}
    conditioned = {**statement, "Condition": {"ArnLike": {"bedrock:InferenceProfileArn": ["arn:*:bedrock:*:*:inference-profile/p"]}}}
    resource = "arn:aws:bedrock:us-east-1::foundation-model/m"
    assert _allows([statement], "bedrock:InvokeModel", resource, {})
    assert not _allows([statement], "bedrock:ListFoundationModels", resource, {})
    assert not _allows([conditioned], "bedrock:InvokeModel", resource, {})  # the key is absent: no match
    assert _allows(
        [conditioned], "bedrock:InvokeModel", resource, {"bedrock:InferenceProfileArn": "arn:aws:bedrock:eu-west-1:1:inference-profile/p"}
    )


def test_no_function_gets_wildcards_on_s3_dynamodb_or_sqs(resources: dict[str, Any]) -> None:
    for name in FUNCTIONS:
        for statement in _statements(resources, name):
            data_actions = {a for a in _actions(statement) if a.startswith(DATA_SERVICES)}
            if not data_actions:
                continue
            assert not any("*" in action for action in data_actions), (name, statement)
            for resource in _as_list(statement["Resource"]):
                text = _text(resource)
                assert text != "*", (name, statement)
                # S3: object ARNs under one prefix, never the bucket's every object
                if any(a.startswith("s3:") for a in data_actions):
                    assert re.fullmatch(r".+/(images|inputs|results|requests)/\*", text), (name, text)


def test_generated_roles_carry_no_broad_managed_policy(transformed: dict[str, Any]) -> None:
    # Given the roles SAM generates (inline Policies plus the managed policies SAM attaches for events)
    roles = {name: res["Properties"] for name, res in transformed["Resources"].items() if res["Type"] == "AWS::IAM::Role"}
    assert {f"{name}Role" for name in FUNCTIONS} <= roles.keys()

    for name, role in roles.items():
        # Then only logs and X-Ray come from managed policies
        assert set(role.get("ManagedPolicyArns", [])) <= ALLOWED_MANAGED_POLICIES, name
        # And no inline statement grants S3, DynamoDB or SQS on "*"
        for statement in _role_statements(role.get("Policies", [])):
            if any(a.startswith(DATA_SERVICES) for a in _as_list(statement["Action"])):
                assert "*" not in _as_list(statement["Resource"]), (name, statement)


def test_transformed_template_notifies_the_trigger_and_has_no_dependency_cycle(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    (notification,) = _props(resources, "ImagesBucket")["NotificationConfiguration"]["LambdaConfigurations"]

    assert notification["Function"] == {"Fn::GetAtt": ["S3TriggerFunction", "Arn"]}
    assert _dependency_cycle(resources) is None


def test_the_cycle_check_sees_a_trigger_that_references_its_bucket(template: dict[str, Any]) -> None:
    # Given the template with the one mistake cfn-lint does not catch: !Ref ImagesBucket in the trigger
    broken = copy.deepcopy(template)
    broken["Resources"]["S3TriggerFunction"]["Properties"]["Environment"]["Variables"]["IMAGES_BUCKET"] = {"Ref": "ImagesBucket"}
    resources = sam_transform(broken)["Resources"]

    # Then the check finds bucket -> permission -> function -> bucket
    cycle = _dependency_cycle(resources)
    assert cycle is not None
    assert {"ImagesBucket", "S3TriggerFunction"} <= set(cycle)


def test_alarms_watch_the_dead_letter_queue_and_the_worker(resources: dict[str, Any]) -> None:
    alarms = [res["Properties"] for res in resources.values() if res["Type"] == "AWS::CloudWatch::Alarm"]

    def watching(namespace: str, metric: str, dimension: dict[str, Any]) -> list[dict[str, Any]]:
        return [a for a in alarms if (a["Namespace"], a["MetricName"]) == (namespace, metric) and dimension in a["Dimensions"]]

    (dlq,) = watching(
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}},
    )
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    (worker,) = watching("AWS/Lambda", "Errors", {"Name": "FunctionName", "Value": {"Ref": "WorkerFunction"}})
    assert (worker["Threshold"], worker["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")


def test_outputs_name_what_clients_and_tests_read(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]

    assert {
        "ApiUrl",
        "ImagesBucketName",
        "ApiFunctionArn",
        "CommonLayerArn",
        "JobsQueueUrl",
        "JobsDeadLetterQueueUrl",
        "JobsTableName",
        "WorkerFunctionArn",
        "S3TriggerFunctionArn",
    } <= outputs.keys()
    assert outputs["ApiUrl"]["Value"] == {"Fn::Sub": "https://${ImageApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}/"}
    assert outputs["JobsQueueUrl"]["Value"] == {"Ref": "JobsQueue"}
    assert outputs["JobsTableName"]["Value"] == {"Ref": "JobsTable"}


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    byte_order = "<" if header[5] == 1 else ">"
    (machine,) = struct.unpack(f"{byte_order}H", header[18:20])
    return int(machine)


def test_sam_build_produces_an_arm64_layer(tmp_path: Path) -> None:
    # Given an x86_64 or arm64 host without Docker / When sam builds into a scratch directory
    build_dir = tmp_path / "build"
    result = _run_sam("build", "--template-file", str(TEMPLATE), "--build-dir", str(build_dir), timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    # And SAM builds the layer for the architecture it declares (Metadata.BuildArchitecture; x86_64 when absent)
    assert "not listed in CompatibleArchitectures" not in result.stdout + result.stderr

    # Then the layer holds our package and aarch64 wheels for CPython 3.12
    site = build_dir / "CommonLayer" / "python"
    assert (site / "imagegen" / "__init__.py").is_file()
    (core,) = site.glob("pydantic_core/_pydantic_core*.so")
    assert "cpython-312" in core.name
    assert _elf_machine(core) == ELF_MACHINE_AARCH64
    # And bytecode for the runtime's Python only (Lambda cannot write it under /opt at cold start)
    compiled = list(site.rglob("*.pyc"))
    assert (site / "imagegen" / "__pycache__" / "service.cpython-312.pyc").is_file()
    assert compiled and all(".cpython-312." in path.name for path in compiled)
    # And no build-host leftovers
    assert not (site / "bin").exists()
    # And every package is the version the project venv (and so every test) runs: the one lock, the AWS SDK included
    # (the layer comes before the runtime's own boto3 on sys.path: a partial SDK would shadow it piecemeal)
    distributions = list(importlib.metadata.distributions(path=[str(site)]))
    shipped = {_normalized(d.metadata["Name"]): d.version for d in distributions}
    assert {"pydantic", "pydantic-core", "aws-lambda-powertools", "httpx", "boto3", "botocore", "s3transfer"} <= shipped.keys()
    assert {name: pinned for name, pinned in _locked().items() if name in shipped} == shipped
    # And the layer is whole: every requirement of every package it ships is met by a package it ships, at a version
    # the requirement allows, so nothing resolves to the runtime's copy (urllib3, jmespath, python-dateutil...)
    assert _unmet_requirements(distributions, _layer_requirements()) == []
    # And every function is a plain copy of its handler, without its Makefile
    for function in FUNCTIONS:
        assert (build_dir / function / "app.py").is_file(), function
        assert not (build_dir / function / "Makefile").exists(), function


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# The Lambda python3.12 arm64 environment, for evaluating requirement markers.
LAMBDA_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "aarch64",
    "os_name": "posix",
}


def _unmet_requirements(distributions: list[importlib.metadata.Distribution], asked: tuple[str, ...] = ()) -> list[str]:
    """ "<package> needs <requirement>" for each requirement of a shipped package that no shipped package satisfies.
    Markers are evaluated for Lambda, with the extras asked for: in ``asked`` (requirements.txt lines such as
    ``aws-lambda-powertools[tracer]``) or by an applying requirement of another shipped package."""
    from packaging.requirements import Requirement

    shipped = {_normalized(d.metadata["Name"]): d for d in distributions}
    extras: dict[str, set[str]] = {}
    for line in asked:
        requirement = Requirement(line)
        extras.setdefault(_normalized(requirement.name), set()).update(requirement.extras)

    def applying(name: str) -> list[Requirement]:
        environments = [{**LAMBDA_MARKERS, "extra": extra} for extra in ("", *sorted(extras.get(name, ())))]
        requirements = [Requirement(line) for line in shipped[name].requires or []]
        return [r for r in requirements if r.marker is None or any(r.marker.evaluate(env) for env in environments)]

    changed = True
    while changed:  # extras asked for by what applies, until nothing new applies
        changed = False
        for name in shipped:
            for requirement in applying(name):
                known = extras.setdefault(_normalized(requirement.name), set())
                if not set(requirement.extras) <= known:
                    known.update(requirement.extras)
                    changed = True
    unmet = []
    for name in sorted(shipped):
        for requirement in applying(name):
            provider = shipped.get(_normalized(requirement.name))
            if provider is None or not requirement.specifier.contains(provider.version, prereleases=True):
                unmet.append(f"{name} needs {requirement}")
    return unmet


def _layer_requirements() -> tuple[str, ...]:
    lines = (REPO_ROOT / "layers/common/requirements.txt").read_text().splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))


def test_the_wholeness_check_sees_a_stripped_sdk(tmp_path: Path) -> None:
    # Given a site like the layer the Makefile built before #12: botocore removed, its urllib3 and jmespath left
    def dist(name: str, version: str, *requires: str) -> None:
        info = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
        (info / "METADATA").write_text("\n".join(lines) + "\n")

    dist("aws-xray-sdk", "2.15.0", "botocore>=1.11.3", "wrapt")
    dist("wrapt", "2.5.2")
    dist("urllib3", "2.8.0")
    dist("jmespath", "1.1.0")
    dist("aws-lambda-powertools", "3.37.0", 'aws-xray-sdk<3.0.0,>=2.8.0; extra == "tracer"', 'pydantic; extra == "parser"')
    asked = ("aws-lambda-powertools[tracer]>=3.20,<4",)
    found = list(importlib.metadata.distributions(path=[str(tmp_path)]))

    # Then the missing SDK is reported, and an extra nobody asked for (parser) is not
    assert _unmet_requirements(found, asked) == ["aws-xray-sdk needs botocore>=1.11.3"]
    # And a shipped package at a version its dependant does not allow is reported too
    dist("botocore", "1.43.127", "jmespath<2.0.0,>=0.7.1", "urllib3!=2.2.0,<2,>=1.25.4", 'awscrt==0.38.0; extra == "crt"')
    assert _unmet_requirements(list(importlib.metadata.distributions(path=[str(tmp_path)])), asked) == [
        "botocore needs urllib3!=2.2.0,<2,>=1.25.4"
    ]


def _locked() -> dict[str, str]:
    """layers/common/constraints.txt: every pinned version, by normalized name."""
    pins = (line.split("==") for line in (REPO_ROOT / "layers/common/constraints.txt").read_text().splitlines())
    return {_normalized(pin[0]): pin[1].strip() for pin in pins if len(pin) == 2 and not pin[0].startswith("#")}


def test_the_venv_runs_the_locked_versions() -> None:
    # Every pinned package this venv has is at its pinned version (make installs with -c the lock), so what the
    # tests exercise is what the layer ships
    locked = _locked()
    assert {"pydantic", "pydantic-core", "aws-lambda-powertools", "httpx", "ruff", "mypy"} <= locked.keys()
    installed = {_normalized(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    assert {name: version for name, version in installed.items() if name in locked} == {
        name: pinned for name, pinned in locked.items() if name in installed
    }


PUBLIC_ROUTES = {("get", "/"), ("get", "/health"), ("get", "/docs"), ("get", "/openapi.json")}


def test_every_route_but_the_public_ones_needs_a_bearer_key_in_the_usage_plan(
    template: dict[str, Any], transformed: dict[str, Any]
) -> None:
    api = _rest_api(transformed)
    body = api["Body"]
    assert api["ApiKeySourceType"] == "AUTHORIZER"
    schemes = body["components"]["securitySchemes"]  # OpenAPI 3 (Globals.Api.OpenApiVersion)
    assert schemes["BearerApiKey"]["x-amazon-apigateway-authtype"] == "custom"
    assert schemes["BearerApiKey"]["x-amazon-apigateway-authorizer"]["type"] == "token"
    assert schemes["BearerApiKey"]["name"] == "Authorization"
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            required = {name for requirement in operation.get("security", []) for name in requirement}
            if (method, path) in PUBLIC_ROUTES:
                assert not required & {"BearerApiKey", "api_key"}, (method, path)
            else:
                assert {"BearerApiKey", "api_key"} <= required, (method, path)
    plans = [r["Properties"] for r in transformed["Resources"].values() if r["Type"] == "AWS::ApiGateway::UsagePlan"]
    (plan,) = plans
    defaults = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    # The offline transform substitutes the parameters' defaults.
    assert plan["Throttle"] == {"BurstLimit": defaults["ThrottleBurstLimit"], "RateLimit": defaults["ThrottleRateLimit"]}
    assert plan["Quota"] == {"Limit": defaults["QuotaPerDay"], "Period": "DAY"}


def _rest_api(transformed: dict[str, Any]) -> dict[str, Any]:
    (api,) = [r["Properties"] for r in transformed["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    return api


def _stage(transformed: dict[str, Any]) -> dict[str, Any]:
    (stage,) = [r["Properties"] for r in transformed["Resources"].values() if r["Type"] == "AWS::ApiGateway::Stage"]
    return stage


def _gateway_error(response: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI error a gateway response renders, API Gateway's message (a JSON string) filled in."""
    text = response["responseTemplates"]["application/json"].replace("$context.error.messageString", '"API Gateway says no"')
    error: dict[str, Any] = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_auth_mode_iam_signs_every_route_but_the_public_ones(template: dict[str, Any], transformed_iam: dict[str, Any]) -> None:
    # Given the template deployed with AuthMode IAM
    api = _rest_api(transformed_iam)
    body = api["Body"]
    resources = transformed_iam["Resources"]

    # Then SigV4 is the only scheme, required on every route but the public ones
    assert {name: s["x-amazon-apigateway-authtype"] for name, s in body["components"]["securitySchemes"].items()} == {"AWS_IAM": "awsSigv4"}
    routes = set()
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            routes.add((method.upper(), path))
            required = {name for requirement in operation.get("security", []) for name in requirement}
            assert required <= {"NONE"} if (method, path) in PUBLIC_ROUTES else required == {"AWS_IAM"}, (method, path)
            # And API Gateway calls the function under its resource policy, never with the caller's credentials
            assert "credentials" not in operation["x-amazon-apigateway-integration"], (method, path)
    assert routes == API_ROUTES | OPTIONAL_API_ROUTES
    # And nothing of the key path is deployed: no key source, key, usage plan, authorizer or its permission
    assert "ApiKeySourceType" not in api
    deployed = {r["Type"] for r in resources.values() if "Condition" not in r}
    assert not deployed & {"AWS::ApiGateway::ApiKey", "AWS::ApiGateway::UsagePlan", "AWS::ApiGateway::UsagePlanKey"}
    assert not {name for name in resources if name.startswith("ImageApi") and "Authorizer" in name}
    for name in ("AuthorizerFunction", "AuthorizerFunctionRole", "AuthorizerFunctionLogGroup"):
        assert resources[name]["Condition"] == "UseApiKeys", name
    # And the key output names no key
    assert transformed_iam["Outputs"]["ApiKeyId"]["Value"] == "none: AuthMode is IAM"


@pytest.mark.parametrize(
    ("fixture", "missing_token"),
    [("transformed", ("404", "unknown_url")), ("transformed_iam", ("403", "missing_authentication"))],
)
def test_gateway_answers_are_openai_errors_in_both_auth_modes(
    request: pytest.FixtureRequest, fixture: str, missing_token: tuple[str, str]
) -> None:
    responses = _rest_api(request.getfixturevalue(fixture))["Body"]["x-amazon-apigateway-gateway-responses"]

    # Every gateway answer renders valid JSON in the OpenAI error shape
    errors = {kind: _gateway_error(response) for kind, response in responses.items()}
    # An unsigned IAM request is told to sign (API Gateway cannot tell it from a missing route); with keys, 404
    status, code = missing_token
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == status
    assert errors["MISSING_AUTHENTICATION_TOKEN"]["code"] == code
    # Signature failures keep API Gateway's reason and a code to branch on
    for kind, code in (("INVALID_SIGNATURE", "invalid_signature"), ("EXPIRED_TOKEN", "expired_token"), ("ACCESS_DENIED", "access_denied")):
        assert responses[kind]["statusCode"] == "403"
        assert errors[kind] == {"message": "API Gateway says no", "type": "invalid_request_error", "param": None, "code": code}


@pytest.mark.parametrize("fixture", ["transformed", "transformed_iam"])
def test_the_stage_throttles_every_route_in_both_auth_modes(request: pytest.FixtureRequest, fixture: str, template: dict[str, Any]) -> None:
    # Given the stage as a mode deploys it (the offline transform substitutes the parameters' defaults)
    document = request.getfixturevalue(fixture)
    defaults = {name: spec.get("Default") for name, spec in template["Parameters"].items()}

    # Then its default method setting ("/*" "*": every resource and method, the public routes included, which no
    # usage plan sees since they take no key) throttles the stage as a whole, before any Lambda runs
    assert _stage(document)["MethodSettings"] == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": defaults["StageThrottleRateLimit"],
            "ThrottlingBurstLimit": defaults["StageThrottleBurstLimit"],
        }
    ]
    paths = set(_rest_api(document)["Body"]["paths"])
    assert {path for _, path in PUBLIC_ROUTES} <= paths
    # And with keys the usage plan's per-key throttle holds on top, within the stage's (API Gateway applies the
    # stricter); a stage limit at the per-key rate would let one key starve every other
    plans = [r["Properties"] for r in document["Resources"].values() if r["Type"] == "AWS::ApiGateway::UsagePlan"]
    for plan in plans:
        assert plan["Throttle"]["RateLimit"] < defaults["StageThrottleRateLimit"]
        assert plan["Throttle"]["BurstLimit"] < defaults["StageThrottleBurstLimit"]
    assert len(plans) == (1 if fixture == "transformed" else 0)


def _lambda(document: dict[str, Any], name: str) -> dict[str, Any]:
    resource = document["Resources"][name]
    assert resource["Type"] == "AWS::Lambda::Function"
    props: dict[str, Any] = resource["Properties"]
    return props


@pytest.mark.parametrize(
    ("function", "parameter"), [("ApiFunction", "ApiReservedConcurrency"), ("AuthorizerFunction", "AuthorizerReservedConcurrency")]
)
def test_reserved_concurrency_is_a_ceiling_only_when_asked(template: dict[str, Any], function: str, parameter: str) -> None:
    # Lambda refuses a reservation that leaves fewer than 100 unreserved executions: none by default
    assert template["Parameters"][parameter]["Default"] == ""
    assert "ReservedConcurrentExecutions" not in _lambda(sam_transform(template), function)
    # Set, it is both a reservation and a ceiling: a flood of requests (or random keys) cannot take more
    assert str(_lambda(sam_transform(template, {parameter: "40"}), function)["ReservedConcurrentExecutions"]) == "40"


def test_random_bearer_tokens_have_a_bounded_cost(template: dict[str, Any], transformed: dict[str, Any]) -> None:
    # Given the TOKEN authorizer as API Gateway gets it: it caches an answer per token, so each new random token is
    # one invocation; API Gateway refuses a token that fails identityValidationExpression without invoking it
    scheme = _rest_api(transformed)["Body"]["components"]["securitySchemes"]["BearerApiKey"]["x-amazon-apigateway-authorizer"]
    assert scheme["type"] == "token"
    assert scheme["authorizerResultTtlInSeconds"] == 300
    expression = re.compile(scheme["identityValidationExpression"])
    from imagegen.auth import bearer_key

    # Then only headers shaped like an API key reach the function, and every key the OpenAI SDKs send does
    for header in ("Bearer " + "k" * 19, "Bearer " + "k" * 129, "Basic dXNlcjpwYXNzd29yZA==", "Bearer ", "Bearer a b" + "c" * 30):
        assert expression.fullmatch(header) is None, header
        assert bearer_key(header) is None, header
    for header in ("Bearer " + "k" * 40, "bearer sk-" + "x" * 48, "Bearer " + "A1b2" * 32):
        assert expression.fullmatch(header) is not None and bearer_key(header), header
    # And each invocation is the cheapest Lambda runs (no network to reach: no permissions, no configuration), ...
    authorizer = _lambda(transformed, "AuthorizerFunction")
    assert (authorizer["MemorySize"], authorizer["Timeout"]) == (128, 5)
    # ... the stage throttle holds every request, a random token's too (an AWS answer on re:Post: a stage or method
    # throttle needs no authorizer run; the usage plan's per-key throttle does, since the authorizer names the key) ...
    assert _stage(transformed)["MethodSettings"][0]["ResourcePath"] == "/*"
    # ... and AuthorizerReservedConcurrency caps its concurrency outright (test_reserved_concurrency_is_a_ceiling_...)
    assert "AuthorizerReservedConcurrency" in template["Parameters"]
    assert transformed["Outputs"]["ApiKeyId"]["Value"] == {"Ref": "ImageApiApiKey"}


def _condition(expression: Any, conditions: dict[str, Any], evaluating: tuple[str, ...] = ()) -> bool:
    """A condition over literals, as the transformed template's Conditions hold them (parameters resolved):
    Fn::Equals, Fn::Not, Fn::And, Fn::Or and {"Condition": name}."""
    if isinstance(expression, bool):
        return expression
    if not (isinstance(expression, dict) and len(expression) == 1):
        raise ValueError(f"not a condition: {expression!r}")
    ((function, arguments),) = expression.items()
    if function == "Condition":
        if arguments in evaluating:
            raise ValueError(f"circular condition: {' -> '.join([*evaluating, arguments])}")
        if arguments not in conditions:
            raise ValueError(f"no such condition: {arguments!r}")
        return _condition(conditions[arguments], conditions, (*evaluating, arguments))
    if function == "Fn::Equals":
        left, right = arguments
        if isinstance(left, dict | list) or isinstance(right, dict | list):
            raise ValueError(f"Fn::Equals over something not literal: {arguments!r}")
        return str(left) == str(right)  # CloudFormation compares strings
    if function == "Fn::Not":
        (operand,) = arguments
        return not _condition(operand, conditions, evaluating)
    if function in ("Fn::And", "Fn::Or"):
        values = [_condition(operand, conditions, evaluating) for operand in arguments]
        return all(values) if function == "Fn::And" else any(values)
    raise ValueError(f"unsupported condition function {function}: {expression!r}")


def _taken_branches(node: Any, truth: dict[str, bool]) -> Any:
    """``node`` with each Fn::If replaced by the branch its condition takes (NoValue left as a Ref to AWS::NoValue)."""
    if isinstance(node, list):
        return [_taken_branches(item, truth) for item in node]
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            condition, when_true, when_false = node["Fn::If"]
            return _taken_branches(when_true if truth[condition] else when_false, truth)
        return {key: _taken_branches(value, truth) for key, value in node.items()}
    return node


def _deployed_dangling_references(document: dict[str, Any]) -> dict[str, set[str]]:
    """What a deployment of ``document`` would refuse: for each resource and output that its condition keeps, the
    names it refers to (Ref, Fn::GetAtt, Fn::Sub, DependsOn; Fn::If by the branch taken) that are neither a kept
    resource, a parameter nor a pseudo parameter."""
    conditions = document.get("Conditions", {})
    truth = {name: _condition({"Condition": name}, conditions) for name in conditions}

    def keeps(entry: dict[str, Any]) -> bool:
        return "Condition" not in entry or truth[entry["Condition"]]

    kept = {name: entry for name, entry in document["Resources"].items() if keeps(entry)}
    outputs = {name: entry for name, entry in document.get("Outputs", {}).items() if keeps(entry)}
    known = set(kept) | set(document.get("Parameters", {}))
    dangling: dict[str, set[str]] = {}
    for name, entry in [*kept.items(), *outputs.items()]:
        taken = _taken_branches({key: value for key, value in entry.items() if key != "Condition"}, truth)
        names = _references(taken) | set(_as_list(taken.get("DependsOn", [])))
        unknown = {ref for ref in names if not ref.startswith("AWS::")} - known
        if unknown:
            dangling[name] = unknown
    return dangling


@pytest.mark.parametrize("fixture", ["transformed", "transformed_iam"])
def test_every_reference_resolves_in_both_auth_modes(request: pytest.FixtureRequest, fixture: str) -> None:
    # CloudFormation refuses a reference to a resource that is not in the template, whatever the conditions
    document = request.getfixturevalue(fixture)
    known = set(document["Resources"]) | set(document.get("Parameters", {}))
    for name, entry in [*document["Resources"].items(), *document.get("Outputs", {}).items()]:
        unknown = {ref for ref in _references(entry) if not ref.startswith("AWS::")} - known
        assert not unknown, (name, unknown)
    # ...and a reference to a resource that the mode's conditions leave out
    assert _deployed_dangling_references(document) == {}


def test_the_conditions_aware_check_sees_a_reference_to_a_resource_the_mode_leaves_out(
    transformed: dict[str, Any], transformed_iam: dict[str, Any]
) -> None:
    # The authorizer exists only with API keys: under IAM nothing deployed may name it
    assert transformed_iam["Resources"]["AuthorizerFunction"]["Condition"] == "UseApiKeys"
    additions = {
        "Resources": {
            "ByGetAtt": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Type": "String", "Value": {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}},
            },
            "ByDependsOn": {
                "Type": "AWS::SSM::Parameter",
                "DependsOn": ["ApiFunction", "AuthorizerFunction"],
                "Properties": {"Value": "x"},
            },
            # Not a dangling reference: the resource goes with the authorizer, or the branch is not taken
            "WithTheAuthorizer": {
                "Type": "AWS::SSM::Parameter",
                "Condition": "UseApiKeys",
                "Properties": {"Value": {"Ref": "AuthorizerFunction"}},
            },
            "ByTheOtherBranch": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Value": {"Fn::If": ["UseIam", "iam", {"Ref": "AuthorizerFunction"}]}},
            },
        },
        "Outputs": {"BySub": {"Value": {"Fn::Sub": "${AuthorizerFunction.Arn} via ${ImageApi}"}}},
    }
    found = {}
    for mode, document in (("ApiKey", transformed), ("IAM", transformed_iam)):
        edited = copy.deepcopy(document)
        for section, entries in additions.items():
            edited.setdefault(section, {}).update(copy.deepcopy(entries))
        found[mode] = _deployed_dangling_references(edited)
    assert found == {
        "ApiKey": {},
        "IAM": {"ByGetAtt": {"AuthorizerFunction"}, "ByDependsOn": {"AuthorizerFunction"}, "BySub": {"AuthorizerFunction"}},
    }


def test_template_conditions_evaluate_as_cloudformation_does() -> None:
    conditions = {
        "IsIam": {"Fn::Equals": ["IAM", "IAM"]},
        "NotIam": {"Fn::Not": [{"Condition": "IsIam"}]},
        "Both": {"Fn::And": [{"Condition": "IsIam"}, {"Fn::Equals": ["", ""]}]},
        "Either": {"Fn::Or": [{"Condition": "NotIam"}, {"Fn::Not": [{"Fn::Equals": [",a,", ",,"]}]}]},
        "Neither": {"Fn::Or": [{"Condition": "NotIam"}, {"Fn::And": [{"Condition": "IsIam"}, {"Condition": "NotIam"}]}]},
        "Loop": {"Fn::Not": [{"Condition": "Loop"}]},
    }
    values = {name: _condition({"Condition": name}, conditions) for name in ("IsIam", "NotIam", "Both", "Either", "Neither")}
    assert values == {"IsIam": True, "NotIam": False, "Both": True, "Either": True, "Neither": False}
    for broken, complaint in (
        ({"Condition": "Loop"}, "circular"),
        ({"Condition": "Nowhere"}, "no such condition"),
        ({"Fn::Equals": [{"Ref": "AuthMode"}, "IAM"]}, "not literal"),
        ({"Fn::If": ["IsIam", True, False]}, "unsupported"),
    ):
        with pytest.raises(ValueError, match=complaint):
            _condition(broken, conditions)


def test_key_failures_answer_in_the_openai_shape_and_only_with_api_keys(
    transformed: dict[str, Any], transformed_iam: dict[str, Any]
) -> None:
    responses = _rest_api(transformed)["Body"]["x-amazon-apigateway-gateway-responses"]
    for kind, status, code in (
        ("UNAUTHORIZED", "401", "invalid_api_key"),
        ("INVALID_API_KEY", "403", "invalid_api_key"),
        ("QUOTA_EXCEEDED", "429", "insufficient_quota"),
    ):
        assert responses[kind]["statusCode"] == status
        assert _gateway_error(responses[kind])["code"] == code
    # Under IAM no answer speaks of API keys: those types fall back to DEFAULT_4XX and API Gateway's message
    iam = _rest_api(transformed_iam)["Body"]["x-amazon-apigateway-gateway-responses"]
    assert not {"UNAUTHORIZED", "INVALID_API_KEY", "QUOTA_EXCEEDED"} & set(iam)
    assert all("API key" not in response["responseTemplates"]["application/json"] for response in iam.values())


def test_the_authorizer_has_no_permissions_and_no_configuration(resources: dict[str, Any]) -> None:
    authorizer = _props(resources, "AuthorizerFunction")
    assert "Policies" not in authorizer and "Environment" not in authorizer
    assert authorizer["Timeout"] <= 5


def _alarms(resources: dict[str, Any]) -> list[dict[str, Any]]:
    return [res["Properties"] for res in resources.values() if res["Type"] == "AWS::CloudWatch::Alarm"]


def _emitted_bug_metric(environment: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    """What a function with ``environment`` publishes when the code counts a bug: the EMF record Powertools prints
    (Lambda ships stdout to CloudWatch Logs, which turns it into metrics) as (namespace, metric, dimensions)."""
    script = "from imagegen.observability import count_bug, metrics\ncount_bug()\nmetrics.flush_metrics()\n"
    env = {key: value for key, value in os.environ.items() if not key.startswith("POWERTOOLS_")}
    env.update(environment)
    env["POWERTOOLS_METRICS_DISABLED"] = "0"
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    (record,) = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{") and '"_aws"' in line]
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    (metric,) = directive["Metrics"]
    (dimension_names,) = directive["Dimensions"]
    return directive["Namespace"], metric["Name"], {name: record[name] for name in dimension_names}


def test_a_bug_counted_by_the_code_sets_off_the_internal_errors_alarm(template: dict[str, Any], resources: dict[str, Any]) -> None:
    # Given what the generating functions publish on a bug, with the Powertools settings the template gives them
    for name in GENERATORS:
        variables = {
            **template["Globals"]["Function"]["Environment"]["Variables"],
            **_props(resources, name)["Environment"]["Variables"],
        }
        powertools = {key: value for key, value in variables.items() if key.startswith("POWERTOOLS_") and isinstance(value, str)}
        namespace, metric, dimensions = _emitted_bug_metric(powertools)

        # Then an alarm watches exactly that metric (CloudWatch matches the namespace, name and the whole dimension
        # set), and one bug in five minutes is enough
        watching = [
            alarm
            for alarm in _alarms(resources)
            if (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric)
            and {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == dimensions
        ]
        (alarm,) = watching
        assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Sum", 300, 1), name
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold"), name
        assert alarm["TreatMissingData"] == "notBreaching", name  # no bug, no data: not an alarm


def test_jobs_waiting_too_long_set_off_an_alarm(template: dict[str, Any], resources: dict[str, Any]) -> None:
    (alarm,) = [
        a
        for a in _alarms(resources)
        if (a["Namespace"], a["MetricName"]) == ("AWS/SQS", "ApproximateAgeOfOldestMessage")
        and a["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["JobsQueue", "QueueName"]}}]
    ]
    assert alarm["Threshold"] == {"Ref": "JobsQueueAgeAlarmSeconds"}
    assert (alarm["Statistic"], alarm["ComparisonOperator"]) == ("Maximum", "GreaterThanOrEqualToThreshold")
    # The default threshold lets one redelivery pass (a failed attempt's message is hidden for the visibility timeout,
    # then runs again) and fires long before SQS would drop the message at the end of its retention
    queue = _props(resources, "JobsQueue")
    threshold = template["Parameters"]["JobsQueueAgeAlarmSeconds"]
    assert int(queue["VisibilityTimeout"]) < threshold["Default"] < int(queue["MessageRetentionPeriod"])
    assert threshold["MaxValue"] <= int(queue["MessageRetentionPeriod"])


def test_every_dead_letter_queue_keeps_its_alarm(resources: dict[str, Any]) -> None:
    # Given every queue something dead-letters into: a queue's redrive target, a function's DeadLetterQueue
    targets = set()
    for res in resources.values():
        redrive = res.get("Properties", {}).get("RedrivePolicy")
        if res["Type"] == "AWS::SQS::Queue" and redrive:
            targets.add(_text(redrive["deadLetterTargetArn"]))
        dead_letter = res.get("Properties", {}).get("DeadLetterQueue")
        if res["Type"] == "AWS::Serverless::Function" and dead_letter:
            targets.add(_text(dead_letter["TargetArn"]))
    dead_letter_queues = {target.removeprefix("GetAtt:").removesuffix(".Arn") for target in targets}
    assert dead_letter_queues == {"JobsDeadLetterQueue", "S3TriggerDeadLetterQueue"}

    # Then each has an alarm on its first visible message
    for queue in dead_letter_queues:
        (alarm,) = [
            a
            for a in _alarms(resources)
            if (a["Namespace"], a["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
            and a["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
        ]
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold"), queue
