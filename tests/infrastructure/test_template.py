"""template.yaml: SAM validation, the security properties we promise, and a real arm64 build.

Everything runs offline except the build test, which downloads the layer's wheels from PyPI.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

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
    ("GET", "/v1/models"),
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
}


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
    loaded: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))
    return loaded


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


def test_images_expire_and_incomplete_uploads_are_aborted(resources: dict[str, Any]) -> None:
    rules = _props(resources, "ImagesBucket")["LifecycleConfiguration"]["Rules"]

    assert any(
        rule["Status"] == "Enabled" and rule.get("Prefix") == "images/" and rule.get("ExpirationInDays") == {"Ref": "ImageRetentionDays"}
        for rule in rules
    )
    assert any(rule["Status"] == "Enabled" and "AbortIncompleteMultipartUpload" in rule for rule in rules)


def test_api_function_touches_only_images_prefix_and_its_secret(resources: dict[str, Any]) -> None:
    # Given every statement the API function's role may get
    statements = list(_policy_statements(_props(resources, "ApiFunction")["Policies"]))

    # Then S3 access is object-level, on images/ only, never s3:* nor "*"
    s3_statements = [s for s in statements if any(a.startswith("s3:") for a in _as_list(s["Action"]))]
    assert len(s3_statements) == 1
    (s3,) = s3_statements
    assert s3["Effect"] == "Allow"
    assert set(_as_list(s3["Action"])) == {"s3:PutObject", "s3:GetObject", "s3:DeleteObject"}
    assert _as_list(s3["Resource"]) == [{"Fn::Sub": "${ImagesBucket.Arn}/images/*"}]

    # And the secret is readable only when configured, and only that one
    others = [s for s in statements if s not in s3_statements]
    assert others == [
        {
            "Sid": "ReadOpenAIApiKey",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": {"Ref": "OpenAIApiKeySecretArn"},
        }
    ]
    (conditional,) = (p for p in _props(resources, "ApiFunction")["Policies"] if "Fn::If" in p)
    assert conditional["Fn::If"][0] == "HasOpenAIKey"
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
    ttl = template["Parameters"]["PresignTtlSeconds"]
    assert (ttl["Default"], ttl["MinValue"], ttl["MaxValue"]) == (3600, 60, 43200)


def test_api_function_serves_the_documented_routes(resources: dict[str, Any]) -> None:
    function = _props(resources, "ApiFunction")
    events = function["Events"].values()

    assert function["Timeout"] == 29  # API Gateway REST cuts requests at 29 s
    assert {(e["Properties"]["Method"].upper(), e["Properties"]["Path"]) for e in events} == API_ROUTES
    assert all(e["Type"] == "Api" and e["Properties"]["RestApiId"] == {"Ref": "ImageApi"} for e in events)
    assert _props(resources, "ImageApi")["StageName"] == {"Ref": "Stage"}


def test_outputs_name_what_clients_and_tests_read(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]

    assert {"ApiUrl", "ImagesBucketName", "ApiFunctionArn", "CommonLayerArn"} <= outputs.keys()
    assert outputs["ApiUrl"]["Value"] == {"Fn::Sub": "https://${ImageApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}/"}


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

    # Then the layer holds our package and aarch64 wheels for CPython 3.12
    site = build_dir / "CommonLayer" / "python"
    assert (site / "imagegen" / "__init__.py").is_file()
    (core,) = site.glob("pydantic_core/_pydantic_core*.so")
    assert "cpython-312" in core.name
    assert _elf_machine(core) == ELF_MACHINE_AARCH64
    assert not list(site.rglob("__pycache__"))
    # And nothing the runtime already provides, nor build-host leftovers
    assert not (site / "botocore").exists()
    assert not (site / "boto3").exists()
    assert not (site / "bin").exists()
    assert not (build_dir / "ApiFunction" / "Makefile").exists()
