"""checkov on template.yaml, offline: as written (checkov knows the AWS::Serverless::* types) and after the
transforms (what CloudFormation gets: the generated roles, stage, permissions) for each of DEPLOYMENTS.

Every suppression lives in template.yaml as `Metadata: checkov: skip: [{id, comment}]` on the resource; SAM
carries a function's Metadata to its AWS::Lambda::Function, and this script copies a SAM resource's checkov
skips to the other resources generated from it (ImageApi -> ImageApiStage, ...), so that the transformed scan
honours the same reasons. Exit status 1 on any failed check, any parsing error, or a skip without a reason.

    .venv/bin/python -m devtools.security_scan [--checkov .venv-tools/bin/checkov]

checkov lives in its own venv (`make security` creates .venv-tools): it pins boto3, packaging and networkx
to versions that would drag aws-sam-cli and boto3 back in .venv.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.sam_template import TEMPLATE, load_template, sam_transform

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKOV = REPO_ROOT / ".venv-tools" / "bin" / "checkov"
# checkov's placeholder when a `checkov:skip=` carries no reason.
NO_COMMENT = "No comment provided"
# The transformed template is scanned as these deployments get it: the defaults (AuthMode ApiKey, no optional
# grant), and AuthMode IAM with every conditional grant switched on (secrets, Bedrock models and profiles, the
# registry, reserved concurrency).
DEPLOYMENTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "AuthMode IAM, every optional grant": {
        "AuthMode": "IAM",
        "OpenAIApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:imagegen-openai-AbCdEf",
        "AzureOpenAIEndpoint": "https://example.openai.azure.com",
        "AzureOpenAIDeployments": '{"gpt-image-1": "gpt-image-1"}',
        "AzureOpenAIApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:imagegen-azure-AbCdEf",
        "GoogleApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:imagegen-google-AbCdEf",
        "BflApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:imagegen-bfl-AbCdEf",
        "StabilityApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:imagegen-stability-AbCdEf",
        "BedrockModels": "amazon.nova-canvas-v1:0,amazon.titan-image-generator-v2:0",
        "BedrockInferenceProfiles": "us.stability.sd3-5-large-v1:0,global.stability.stable-image-ultra-v1:1",
        "ModelRegistryParameter": "/imagegen/models",
        "ApiReservedConcurrency": "50",
    },
}

OFFLINE_ENV = {
    # No Bridgecrew/Prisma download, no PyPI version check: the scan runs without network.
    "BC_SKIP_MAPPING": "TRUE",
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
    "ANONYMIZE_TELEMETRY": "true",
}


@dataclass
class ScanResult:
    target: str
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (check on resource, reason)
    parsing_errors: list[str] = field(default_factory=list)

    @property
    def unexplained_skips(self) -> list[str]:
        return [what for what, reason in self.skipped if not reason.strip() or reason.strip() == NO_COMMENT]

    @property
    def ok(self) -> bool:
        return not (self.failed or self.parsing_errors or self.unexplained_skips)

    def summary(self) -> str:
        return f"{self.target}: passed={self.passed} failed={len(self.failed)} skipped={len(self.skipped)}"


def find_checkov(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    if DEFAULT_CHECKOV.exists():
        return str(DEFAULT_CHECKOV)
    return shutil.which("checkov")


def transformed_template(template_path: Path = TEMPLATE, parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """template.yaml as CloudFormation gets it with these parameters (devtools/sam_template.py), each SAM
    resource's checkov skips copied to the resources generated from it."""
    source = load_template(template_path)
    result = sam_transform(source, parameters)

    sam_skips = {
        name: resource["Metadata"]["checkov"]
        for name, resource in source["Resources"].items()
        if resource["Type"].startswith("AWS::Serverless::") and "checkov" in resource.get("Metadata", {})
    }
    for name, resource in result["Resources"].items():
        if name in source["Resources"]:
            continue  # declared in template.yaml: its own Metadata (SAM keeps a function's)
        # Generated: SAM names it after its SAM resource (ImageApiStage, ApiFunctionRole, CommonLayer3377f5...)
        owners = sorted((owner for owner in sam_skips if name.startswith(owner)), key=len, reverse=True)
        if owners:
            resource.setdefault("Metadata", {})["checkov"] = copy.deepcopy(sam_skips[owners[0]])
    return result


def run_checkov(checkov: str, path: Path, target: str) -> ScanResult:
    env = {**os.environ, **OFFLINE_ENV}
    completed = subprocess.run(
        [checkov, "--file", str(path), "--framework", "cloudformation", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if completed.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed on {target} (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    report = json.loads(completed.stdout)
    reports = report if isinstance(report, list) else [report]
    scan = ScanResult(target)
    for item in reports:
        if item.get("check_type") not in (None, "cloudformation"):
            continue
        results = item.get("results", {})
        scan.passed += len(results.get("passed_checks", []))
        for check in results.get("failed_checks", []):
            scan.failed.append(f"{check['check_id']} {check['resource']}: {check['check_name']}")
        for check in results.get("skipped_checks", []):
            what = f"{check['check_id']} {check['resource']}"
            scan.skipped.append((what, str((check.get("check_result") or {}).get("suppress_comment") or "")))
        scan.parsing_errors.extend(results.get("parsing_errors", []))
    return scan


def scan(checkov: str, template_path: Path = TEMPLATE) -> list[ScanResult]:
    results = [run_checkov(checkov, template_path, template_path.name)]
    with tempfile.TemporaryDirectory(prefix="checkov-") as tmp:
        for name, parameters in DEPLOYMENTS.items():
            transformed = Path(tmp) / f"transformed-{len(results)}.json"
            transformed.write_text(json.dumps(transformed_template(template_path, parameters), indent=1, default=str))
            results.append(run_checkov(checkov, transformed, f"{template_path.name} (SAM-transformed, {name})"))
    return results


def report(results: list[ScanResult]) -> str:
    lines: list[str] = []
    for result in results:
        lines.append(result.summary())
        lines.extend(f"  FAILED {what}" for what in result.failed)
        lines.extend(f"  SKIPPED WITHOUT A REASON {what}" for what in result.unexplained_skips)
        lines.extend(f"  PARSING ERROR {what}" for what in result.parsing_errors)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkov", help="checkov executable (default: .venv-tools/bin/checkov, else PATH)")
    parser.add_argument("--verbose", action="store_true", help="also list every skipped check with its reason")
    args = parser.parse_args(argv)
    checkov = find_checkov(args.checkov)
    if checkov is None:
        print("checkov not found: `make security` installs it into .venv-tools", file=sys.stderr)
        return 2
    results = scan(checkov)
    print(report(results))
    if args.verbose:
        for result in results:
            for what, reason in result.skipped:
                print(f"  skipped {what}: {reason}")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
