"""The least-privilege machinery itself: the recorder sees what botocore sends and presigns, attributes it to the
function running, and the evaluator refuses what the deployed role would refuse (AccessDenied), by AWS's rules:
no Allow is an implicit deny, an explicit Deny wins over any Allow, a grant on one key prefix is not one on
another, and the test's random resource names are judged as the deployed names the function's variables give."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from devtools import aws_calls, iam_eval, rie
from devtools.aws_calls import EVENT_SOURCE_MAPPING, Call, Caller
from devtools.sam_template import load_template

LOCAL_BUCKET = "imagegen-it-0a1b2c3d"
LOCAL_QUEUE = "http://127.0.0.1:5123/123456789012/it-0a1b2c3d-jobs"
LOCAL_TABLE = "it-0a1b2c3d-jobs"
DEPLOYED_BUCKET_ARN = "arn:aws:s3:::imagegen-images-123456789012-us-east-1"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def deployment(template: dict[str, Any]) -> iam_eval.Deployment:
    return iam_eval.load_deployment(template=template)


def s3_call(function: str, operation: str, key: str, **extra: Any) -> Call:
    return Call(function, "s3", operation, {"Bucket": LOCAL_BUCKET, "Key": key}, "eu-west-1", env={"IMAGES_BUCKET": LOCAL_BUCKET}, **extra)


def sqs_call(function: str, operation: str, via: str = aws_calls.HANDLER) -> Call:
    env = {"JOBS_QUEUE_URL": LOCAL_QUEUE} if via == aws_calls.HANDLER else {}
    return Call(function, "sqs", operation, {"QueueUrl": LOCAL_QUEUE}, "us-east-1", via=via, env=env)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def without_statements(template: dict[str, Any], function: str, action: str) -> dict[str, Any]:
    """``template`` with every statement of ``function``'s policies that grants ``action`` removed."""
    changed = copy.deepcopy(template)
    for policy in changed["Resources"][function]["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            policy["Statement"] = [s for s in policy["Statement"] if action not in _as_list(s.get("Action"))]
    return changed


def test_a_call_no_statement_allows_is_denied_naming_function_action_and_resource(deployment: iam_eval.Deployment) -> None:
    report = iam_eval.evaluate([sqs_call("api", "ChangeMessageVisibility")], deployment)

    assert not report.ok
    [finding] = report.denied
    assert finding.decision == "ImplicitlyDenied"
    assert finding.request == iam_eval.Request(
        "api", "sqs:ChangeMessageVisibility", "arn:aws:sqs:us-east-1:123456789012:imagegen-JobsQueue-A1B2C3D4E5F6"
    )
    described = finding.describe()
    assert "function api" in described and "sqs:ChangeMessageVisibility" in described and "imagegen-JobsQueue" in described


def test_the_worker_changing_visibility_is_denied_until_the_template_grants_it(template: dict[str, Any]) -> None:
    before = iam_eval.load_deployment(template=without_statements(template, "WorkerFunction", "sqs:ChangeMessageVisibility"))
    call = sqs_call("worker", "ChangeMessageVisibility")

    assert [f.request.action for f in iam_eval.evaluate([call], before).denied] == ["sqs:ChangeMessageVisibility"]


def test_local_names_are_judged_as_the_deployed_resources_their_variables_name(deployment: iam_eval.Deployment) -> None:
    calls = [
        s3_call("api", "PutObject", "images/2026/12/02/req/0.png"),
        s3_call("api", "GetObject", "images/2026/12/02/req/0.png", presign=True),
        s3_call("api", "HeadObject", "images/2026/12/02/req/1.png"),  # HeadObject is authorized as s3:GetObject
        Call("worker", "dynamodb", "UpdateItem", {"TableName": LOCAL_TABLE}, "us-east-1", env={"JOBS_TABLE": LOCAL_TABLE}),
        sqs_call("api", "SendMessage"),
    ]
    report = iam_eval.evaluate(calls, deployment)

    assert report.ok, report.lines()
    assert report.requests == 5 and report.allowed == 5
    exercised = {(g.function, g.action, g.resource) for g in report.exercised}
    assert ("api", "s3:PutObject", f"{DEPLOYED_BUCKET_ARN}/images/*") in exercised
    assert ("api", "s3:GetObject", f"{DEPLOYED_BUCKET_ARN}/images/*") in exercised


def test_a_grant_on_one_key_prefix_is_not_one_on_another(deployment: iam_eval.Deployment) -> None:
    calls = [s3_call("api", "PutObject", "results/job.json"), s3_call("s3_trigger", "GetObject", "images/x.png")]
    report = iam_eval.evaluate(calls, deployment)

    assert sorted((f.request.function, f.request.resource) for f in report.denied) == [
        ("api", f"{DEPLOYED_BUCKET_ARN}/results/job.json"),
        ("s3_trigger", f"{DEPLOYED_BUCKET_ARN}/images/x.png"),
    ]


def test_a_denied_call_names_the_variable_the_template_does_not_give_the_function(deployment: iam_eval.Deployment) -> None:
    call = Call("s3_trigger", "dynamodb", "PutItem", {"TableName": LOCAL_TABLE}, "us-east-1", env={"JOBS_TABLE": LOCAL_TABLE})
    [finding] = iam_eval.evaluate([call], deployment).denied

    assert finding.foreign_env == ["JOBS_TABLE"]
    assert "the template does not give s3_trigger JOBS_TABLE" in finding.describe()


def test_an_explicit_deny_wins_over_an_allow(template: dict[str, Any]) -> None:
    changed = copy.deepcopy(template)
    changed["Resources"]["WorkerFunction"]["Properties"]["Policies"].append(
        {"Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": {"Fn::Sub": "${ImagesBucket.Arn}/results/*"}}]}
    )
    report = iam_eval.evaluate([s3_call("worker", "PutObject", "results/job.json")], iam_eval.load_deployment(template=changed))

    assert [f.decision for f in report.denied] == ["ExplicitlyDenied"]


def test_an_action_aws_does_not_have_is_refused(deployment: iam_eval.Deployment) -> None:
    report = iam_eval.evaluate([sqs_call("worker", "ChangeMessageVisibilityEverywhere")], deployment)

    assert not report.ok
    assert report.denied[0].decision.startswith("Invalid request")


def test_the_event_source_mapping_polls_with_the_role_of_the_function_it_feeds(deployment: iam_eval.Deployment) -> None:
    calls = [
        sqs_call("worker", "DeleteMessage"),
        sqs_call("", "ReceiveMessage", EVENT_SOURCE_MAPPING),
        sqs_call("", "DeleteMessageBatch", EVENT_SOURCE_MAPPING),
    ]
    report = iam_eval.evaluate(calls, deployment)

    assert report.ok, report.lines()
    assert {(g.function, g.action) for g in report.exercised} >= {("worker", "sqs:ReceiveMessage"), ("worker", "sqs:DeleteMessage")}


def test_a_name_no_variable_gave_is_a_finding(deployment: iam_eval.Deployment) -> None:
    stray = Call("api", "s3", "PutObject", {"Bucket": "someone-elses-bucket", "Key": "images/x.png"}, "us-east-1")
    report = iam_eval.evaluate([stray], deployment)

    assert not report.ok
    assert "someone-elses-bucket" in report.unmapped[0]


def test_unexercised_grants_are_listed_and_only_unexplained_ones_are_new(deployment: iam_eval.Deployment) -> None:
    # (the API function may put under images/ and inputs/: two grants of s3:PutObject, both exercised here)
    calls = [s3_call("api", "PutObject", "images/x.png"), s3_call("api", "PutObject", "inputs/x.png")]
    report = iam_eval.evaluate(calls, deployment)
    fresh = {(g.function, g.action) for g in iam_eval.new_unexercised(report, iam_eval.load_allowlist())}

    assert ("api", "s3:PutObject") not in fresh
    assert ("api", "dynamodb:PutItem") in fresh and ("api", "s3:DeleteObject") in fresh
    assert not any(action.startswith(("logs:", "xray:")) for _, action in fresh)  # allow-listed, with reasons


# --- the recorder -------------------------------------------------------------------------------------------------


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Calls recorded as the api function's into tmp_path (the session's recorder restored afterwards)."""
    previous = aws_calls._installed
    aws_calls.install(tmp_path, lambda: Caller("api"))
    monkeypatch.setenv("IMAGES_BUCKET", "bucket-from-env")
    yield tmp_path
    aws_calls._installed = previous


def test_the_recorder_sees_calls_and_presigned_urls_with_the_names_only(recorder: Path) -> None:
    s3 = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="k", aws_secret_access_key="s")
    with Stubber(s3) as stub:
        stub.add_response("put_object", {}, {"Bucket": "bucket-from-env", "Key": "images/a.png", "Body": b"secret bytes"})
        s3.put_object(Bucket="bucket-from-env", Key="images/a.png", Body=b"secret bytes")
    s3.generate_presigned_url("get_object", Params={"Bucket": "bucket-from-env", "Key": "images/a.png"}, ExpiresIn=60)

    # Only this test's calls: a late clean-up of an earlier test (ImageStore deletes a write that ends after its
    # request gave up) may run on a thread of its own while this recorder is installed.
    put, get = [call for call in aws_calls.read_calls(recorder) if call.params.get("Bucket") == "bucket-from-env"]
    assert (put.function, put.service, put.operation, put.presign) == ("api", "s3", "PutObject", False)
    assert put.params == {"Bucket": "bucket-from-env", "Key": "images/a.png"}  # never the body
    assert put.env == {"IMAGES_BUCKET": "bucket-from-env"} and put.region == "eu-west-1"
    assert (get.operation, get.presign) == ("GetObject", True)


def _code_in(path: Path, source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"aws_calls": aws_calls, "ThreadPoolExecutor": ThreadPoolExecutor}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace


def test_in_process_calls_are_the_innermost_handlers_and_thread_pools_inherit_it() -> None:
    aws_calls.propagate_to_thread_pools()
    worker = _code_in(
        aws_calls.REPO_ROOT / "functions" / "worker" / "app.py",
        "def handler():\n"
        "    with ThreadPoolExecutor(1) as pool:\n"
        "        return aws_calls.in_process_caller(), pool.submit(aws_calls.in_process_caller).result()\n",
    )

    assert worker["handler"]() == (Caller("worker"), Caller("worker"))
    assert aws_calls.in_process_caller() is None  # the tests' own calls are not the functions'
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(aws_calls.in_process_caller()))
    thread.start()
    thread.join()
    assert seen == [None]


def test_the_rie_runs_the_runtime_through_the_recorder_only_when_asked(tmp_path: Path) -> None:
    config = rie.FunctionConfig(code_dir=aws_calls.REPO_ROOT / "functions" / "api")

    plain, env = rie.runtime_command(config, environ={})
    assert plain[1:] == ["-m", "awslambdaric", "app.lambda_handler"] and aws_calls.ENV_VAR not in env
    recorded, env = rie.runtime_command(config, environ={aws_calls.ENV_VAR: str(tmp_path)})
    assert recorded[1:] == [str(Path(aws_calls.__file__).resolve()), "app.lambda_handler"]
    assert env[aws_calls.ENV_VAR] == str(tmp_path)


def one_role(policy: dict[str, Any], region: str = "us-east-1", env: dict[str, str] | None = None) -> iam_eval.Deployment:
    """A deployment of one function, api, whose role has only ``policy`` (and whose template gives it ``env``)."""
    role = iam_eval.FunctionRole("api", "ApiFunction", "imagegen-api", "ApiRole", "imagegen-api-role", (("only", policy),), env or {})
    return iam_eval.Deployment("123456789012", region, "aws", {"api": role}, {})


def test_conditions_are_judged_with_the_context_of_the_deployed_functions_requests() -> None:
    # aws:RequestedRegion is the function's region; aws:SecureTransport is true (the SDK speaks HTTPS to AWS).
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "bedrock:InvokeModel",
                "Resource": "arn:*:bedrock:*::foundation-model/amazon.nova-canvas-v1:0",
                "Condition": {"StringEquals": {"aws:RequestedRegion": "us-east-1"}, "Bool": {"aws:SecureTransport": "true"}},
            }
        ],
    }
    call = Call("api", "bedrock", "InvokeModel", {"modelId": "amazon.nova-canvas-v1:0"}, "us-east-1")

    assert iam_eval.evaluate([call], one_role(policy)).ok
    assert [f.decision for f in iam_eval.evaluate([call], one_role(policy, region="eu-west-1")).denied] == ["ImplicitlyDenied"]


def test_a_call_through_an_inference_profile_needs_the_profile_and_its_model_with_the_profile_condition() -> None:
    # The policy AWS documents for cross-Region inference: the profile, and its foundation model in any region only
    # when reached through that profile (bedrock:InferenceProfileArn).
    profile = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.stability.sd3-5-large-v1:0"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "bedrock:InvokeModel", "Resource": profile},
            {
                "Effect": "Allow",
                "Action": "bedrock:InvokeModel",
                "Resource": "arn:aws:bedrock:*::foundation-model/stability.sd3-5-large-v1:0",
                "Condition": {"StringEquals": {"bedrock:InferenceProfileArn": profile}},
            },
        ],
    }
    deployment = one_role(policy)
    call = Call("api", "bedrock", "InvokeModel", {"modelId": "us.stability.sd3-5-large-v1:0"}, "us-east-1")

    requests = iam_eval.requests_for(call, deployment, iam_eval.NameMap(deployment, []))
    assert [(r.resource, dict(r.context)) for r in requests] == [
        (profile, {}),
        ("arn:aws:bedrock:us-east-1::foundation-model/stability.sd3-5-large-v1:0", {"bedrock:InferenceProfileArn": profile}),
    ]
    assert iam_eval.evaluate([call], deployment).ok
    direct = Call("api", "bedrock", "InvokeModel", {"modelId": "stability.sd3-5-large-v1:0"}, "us-east-1")
    assert [f.decision for f in iam_eval.evaluate([direct], deployment).denied] == ["ImplicitlyDenied"]


def test_a_call_from_a_child_process_is_given_the_test_running_when_it_was_made(tmp_path: Path) -> None:
    recorder = aws_calls.Recorder(tmp_path, lambda: Caller("worker"))
    aws_calls.mark_test(tmp_path, "tests/e2e/test_a.py::test_one")
    first = time.time()
    time.sleep(0.01)
    aws_calls.mark_test(tmp_path, "tests/e2e/test_a.py::test_two")
    second = time.time()
    recorder.write(Call("worker", "s3", "PutObject", {}, "us-east-1", at=first))
    recorder.write(Call("worker", "s3", "PutObject", {}, "us-east-1", at=second + 1))
    recorder.write(Call("api", "s3", "PutObject", {}, "us-east-1", test="tests/integration/test_b.py::test_own", at=second))

    assert [call.test for call in aws_calls.read_calls(tmp_path)] == [
        "tests/e2e/test_a.py::test_one",
        "tests/e2e/test_a.py::test_two",
        "tests/integration/test_b.py::test_own",
    ]


def test_a_listing_is_judged_on_the_bucket_with_its_prefix() -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::deployed-bucket",
                "Condition": {"StringLike": {"s3:prefix": "results/*"}},
            }
        ],
    }
    deployment = one_role(policy, env={"IMAGES_BUCKET": "deployed-bucket"})

    def listing(prefix: str) -> Call:
        return Call("api", "s3", "ListObjectsV2", {"Bucket": "local", "Prefix": prefix}, "us-east-1", env={"IMAGES_BUCKET": "local"})

    assert iam_eval.evaluate([listing("results/x")], deployment).ok
    [denied] = iam_eval.evaluate([listing("images/x")], deployment).denied
    assert (denied.request.action, denied.request.resource) == ("s3:ListBucket", "arn:aws:s3:::deployed-bucket")


def test_an_allow_list_entry_that_explains_no_grant_is_stale(deployment: iam_eval.Deployment) -> None:
    report = iam_eval.evaluate([s3_call("api", "PutObject", "images/x.png")], deployment)
    gone = iam_eval.AllowedUnexercised("worker", "sqs:PurgeQueue", "*", "a grant the template no longer has")

    assert iam_eval.stale_allowlist(report, [*iam_eval.load_allowlist(), gone]) == [gone]


def test_a_line_cut_short_by_a_killed_process_is_skipped(tmp_path: Path) -> None:
    aws_calls.Recorder(tmp_path, lambda: Caller("api")).write(Call("api", "s3", "PutObject", {}, "us-east-1"))
    with (tmp_path / "calls-1.jsonl").open("a") as log:
        log.write('{"function": "worker", "serv')

    assert [call.function for call in aws_calls.read_calls(tmp_path)] == ["api"]


def test_the_buckets_own_policy_is_evaluated_too(template: dict[str, Any], deployment: iam_eval.Deployment) -> None:
    assert "DenyInsecureTransport" in str(deployment.resource_policy(f"{DEPLOYED_BUCKET_ARN}/images/x.png"))
    changed = copy.deepcopy(template)
    policy = next(r for r in changed["Resources"].values() if r["Type"] == "AWS::S3::BucketPolicy")
    policy["Properties"]["PolicyDocument"]["Statement"].append(
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": {"Fn::Sub": "${ImagesBucket.Arn}/results/*"}}
    )
    call = s3_call("worker", "PutObject", "results/job.json")

    assert iam_eval.evaluate([call], deployment).ok  # TLS, as the SDK speaks to AWS: the bucket's Deny does not apply
    assert [f.decision for f in iam_eval.evaluate([call], iam_eval.load_deployment(template=changed)).denied] == ["ExplicitlyDenied"]
