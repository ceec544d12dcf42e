"""checkov on template.yaml, offline (as written, and as each example deployment gets it): no failed check, every
skip with its reason.

The same scan as `make security` (devtools/security_scan.py), so `make test` fails on a new finding too. checkov
lives in .venv-tools (`make security`, `make test` and `make test-infra` create it); without it the test skips.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from devtools import security_scan

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def checkov() -> str:
    found = security_scan.find_checkov(os.environ.get("CHECKOV"))
    if found is None:
        pytest.skip("checkov is not installed: `make security` puts it in .venv-tools")
    return found


def test_checkov_finds_nothing_unexplained(checkov: str) -> None:
    results = security_scan.scan(checkov)

    print()
    print(security_scan.report(results))
    # As written, then as each deployment gets it (defaults; AuthMode IAM with every optional grant)
    assert [r.target for r in results] == [
        "template.yaml",
        *(f"template.yaml (SAM-transformed, {name})" for name in security_scan.DEPLOYMENTS),
    ]
    assert len(security_scan.DEPLOYMENTS) == 2
    for result in results:
        assert result.passed > 0, result.summary()  # the scan really ran checks
        assert result.failed == [], result.summary()
        assert result.parsing_errors == [], result.summary()
        assert result.unexplained_skips == [], result.summary()


def test_the_scan_fails_on_a_new_finding(checkov: str, tmp_path: Path) -> None:
    # Given the template with the bucket's versioning skip pointed at no check (edited as text: comments stay)
    text = security_scan.TEMPLATE.read_text()
    document: dict[str, Any] = cfn_yaml.loads(text)
    assert "CKV_AWS_21" in {s["id"] for s in document["Resources"]["ImagesBucket"]["Metadata"]["checkov"]["skip"]}
    broken = text.replace("          - id: CKV_AWS_21\n", "          - id: CKV_AWS_21_NOT_A_CHECK\n", 1)
    assert broken != text
    template = tmp_path / "template.yaml"
    template.write_text(broken)

    # When it is scanned as written
    result = security_scan.run_checkov(checkov, template, "broken")

    # Then the versioning check fails on the bucket
    assert any(f.startswith("CKV_AWS_21 AWS::S3::Bucket.ImagesBucket") for f in result.failed), result.failed
    assert not result.ok


def test_transformed_template_carries_the_sam_resources_skips() -> None:
    pytest.importorskip("samtranslator")
    document = security_scan.transformed_template()
    resources = document["Resources"]

    # The stage SAM generates from ImageApi carries ImageApi's reasons; the functions keep their own
    stage = next(r for name, r in resources.items() if r["Type"] == "AWS::ApiGateway::Stage" and name.startswith("ImageApi"))
    assert {s["id"] for s in stage["Metadata"]["checkov"]["skip"]} >= {"CKV_AWS_76", "CKV_AWS_120"}
    assert resources["ApiFunction"]["Metadata"]["checkov"]["skip"]
    # And nothing declared in template.yaml gets skips it does not declare itself
    assert "Metadata" not in resources["ImagesBucketPolicy"]
    json.dumps(copy.deepcopy(document), default=str)  # what the scan writes to disk


# The optional deployments, scanned like DEPLOYMENTS: ResponseStreaming changes the API's integrations and the
# function's configuration; SnapStart publishes versions and points every invoker at their alias.
OPTIONAL_DEPLOYMENTS = {
    "streaming": {"ResponseStreaming": "true", "StreamingTimeoutSeconds": "900"},
    "snapstart": {"SnapStart": "true"},
}


@pytest.mark.parametrize("auth_mode", ["ApiKey", "IAM"])
@pytest.mark.parametrize("deployment", sorted(OPTIONAL_DEPLOYMENTS))
def test_checkov_finds_nothing_unexplained_in_an_optional_deployment(checkov: str, tmp_path: Path, deployment: str, auth_mode: str) -> None:
    document = security_scan.transformed_template(parameters={**OPTIONAL_DEPLOYMENTS[deployment], "AuthMode": auth_mode})
    transformed = tmp_path / f"transformed-{deployment}.json"
    transformed.write_text(json.dumps(document, indent=1, default=str))

    result = security_scan.run_checkov(checkov, transformed, f"template.yaml (SAM-transformed, {deployment}, {auth_mode})")

    print()
    print(result.summary())
    assert result.passed > 0, result.summary()
    assert result.failed == [], result.summary()
    assert result.parsing_errors == [], result.summary()
    assert result.unexplained_skips == [], result.summary()
