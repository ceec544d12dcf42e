"""template.yaml's ResponseStreaming switch (docs/streaming.md): off, the deployment is the buffered API it always
was; on, every ApiFunction route is an API Gateway STREAM route and the function runs functions/api/bootstrap.

Checked on the offline SAM transform (devtools/sam_template.py) and on the API function's own build (its
Makefile), never on AWS.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from devtools.sam_template import load_template, sam_transform

pytestmark = pytest.mark.infra

REPO_ROOT = Path(__file__).resolve().parents[2]
API_DIR = REPO_ROOT / "functions" / "api"
SWITCH = "StreamResponses"
STREAMING_PARAMETERS = ("ResponseStreaming", "StreamingTimeoutSeconds")
BUFFERED_URI = "arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${ApiFunction.Arn}/invocations"
STREAMING_URI = "arn:aws:apigateway:${AWS::Region}:lambda:path/2021-11-15/functions/${ApiFunction.Arn}/response-streaming-invocations"
# API Gateway's cap on one stream (response-transfer-mode.html), as AWS's own STREAM examples set it.
STREAM_INTEGRATION_TIMEOUT_MS = 900000
TASK_ROOT = "/var/task/"
AUTH_MODES = ({}, {"AuthMode": "IAM"})
# The unprivileged uid and gid (nobody) the build test runs make as when the tests run as root.
NOBODY = 65534


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _api_function_routes(template: dict[str, Any]) -> set[tuple[str, str]]:
    events = template["Resources"]["ApiFunction"]["Properties"]["Events"].values()
    return {(e["Properties"]["Method"].lower(), e["Properties"]["Path"]) for e in events if e["Type"] == "Api"}


def _integrations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every method of the generated RestApi's body, by (method, path), with its x-amazon-apigateway-integration."""
    (api,) = [r["Properties"] for r in document["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    return {
        (method, path): operation["x-amazon-apigateway-integration"]
        for path, methods in api["Body"]["paths"].items()
        for method, operation in methods.items()
    }


def _uri(integration: dict[str, Any]) -> str:
    uri: str = integration["uri"]["Fn::Sub"]
    return uri


def _api_lambda(document: dict[str, Any]) -> dict[str, Any]:
    resource = document["Resources"]["ApiFunction"]
    assert resource["Type"] == "AWS::Lambda::Function"
    props: dict[str, Any] = resource["Properties"]
    return props


def without_switch(node: Any, switch: str = SWITCH) -> Any:
    """``node`` as it was before the switch (a condition) existed: each Fn::If on it replaced by its false branch, a
    key whose false branch is AWS::NoValue dropped."""
    if isinstance(node, list):
        return [without_switch(item, switch) for item in node]
    if isinstance(node, dict):
        if set(node) == {"Fn::If"} and node["Fn::If"][0] == switch:
            return without_switch(node["Fn::If"][2], switch)
        kept = {key: without_switch(value, switch) for key, value in node.items()}
        return {key: value for key, value in kept.items() if value != {"Ref": "AWS::NoValue"}}
    return node


def _names_used(node: Any) -> set[str]:
    """The parameters, conditions and resources ``node`` uses: Ref, Condition, Fn::If's condition, Fn::Sub's
    ${name} (text such as a Description is not a use)."""
    if isinstance(node, list):
        return set().union(*(_names_used(item) for item in node))
    if not isinstance(node, dict):
        return set()
    names: set[str] = set()
    for key, value in node.items():
        if key in ("Ref", "Condition") and isinstance(value, str):
            names.add(value)
        elif key == "Fn::If":
            names.add(value[0])
        elif key == "Fn::Sub":
            text = value if isinstance(value, str) else value[0]
            names |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)}
        names |= _names_used(value)
    return names


def test_the_switch_is_off_unless_asked(template: dict[str, Any]) -> None:
    switch = template["Parameters"]["ResponseStreaming"]
    assert (switch["Type"], switch["Default"], switch["AllowedValues"]) == ("String", "false", ["true", "false"])
    assert template["Conditions"][SWITCH] == {"Fn::Equals": [{"Ref": "ResponseStreaming"}, "true"]}
    timeout = template["Parameters"]["StreamingTimeoutSeconds"]
    # A streamed request may outlive 29 s, up to Lambda's 15 minutes; never below the buffered requests' 29 s
    assert (timeout["Type"], timeout["Default"], timeout["MinValue"], timeout["MaxValue"]) == ("Number", 300, 29, 900)


def _off_findings(template: dict[str, Any], mode: dict[str, str]) -> list[str]:
    """How the deployment of ``template`` with the switch off (by default and explicitly) differs from today's
    buffered API: from the template with the switch taken out, and from what the buffered API is."""
    # The template with the switch taken out: its false branches, no parameters, no condition
    before = without_switch(template)
    for name in STREAMING_PARAMETERS:
        del before["Parameters"][name]
    del before["Conditions"][SWITCH]
    if _names_used(before) & {SWITCH, *STREAMING_PARAMETERS}:
        return ["the switch is used beyond an Fn::If"]
    expected = sam_transform(before, mode)
    findings: list[str] = []
    for label, overrides in (("default", mode), ("false", {**mode, "ResponseStreaming": "false"})):
        document = sam_transform(template, overrides)
        findings += [f"{label}: {section} differ" for section in ("Resources", "Outputs") if document[section] != expected[section]]
        # The buffered API: the plain invocation URI and API Gateway's default 29 s on every route, no wrapper
        function = _api_lambda(document)
        if function["Timeout"] != 29:
            findings.append(f"{label}: Timeout {function['Timeout']}")
        if "AWS_LAMBDA_EXEC_WRAPPER" in function["Environment"]["Variables"]:
            findings.append(f"{label}: AWS_LAMBDA_EXEC_WRAPPER set")
        for (method, path), integration in sorted(_integrations(document).items()):
            findings += [f"{label}: {method} {path} has {key}" for key in ("responseTransferMode", "timeoutInMillis") if key in integration]
            if _uri(integration) != BUFFERED_URI:
                findings.append(f"{label}: {method} {path} invokes {_uri(integration)}")
    return findings


@pytest.mark.parametrize("mode", AUTH_MODES, ids=["ApiKey", "IAM"])
def test_off_the_deployment_is_the_buffered_api_it_was(template: dict[str, Any], mode: dict[str, str]) -> None:
    assert _off_findings(template, mode) == []
    assert set(_integrations(sam_transform(template, mode))) == _api_function_routes(template)


def test_the_off_check_sees_a_route_streaming_regardless_a_changed_buffered_value_and_a_conditional_resource(
    template: dict[str, Any],
) -> None:
    # Given one route streaming outside the switch, and the switch's false branch not today's 29 s
    broken = copy.deepcopy(template)
    function = broken["Resources"]["ApiFunction"]["Properties"]
    function["Events"]["Health"]["Properties"]["ResponseTransferMode"] = "RESPONSE_STREAM"
    function["Timeout"]["Fn::If"][2] = 30
    # ... and, alone, a resource that exists only with the switch
    conditional = copy.deepcopy(template)
    conditional["Resources"]["ApiFunction"]["Condition"] = SWITCH

    # Then the check names each
    assert set(_off_findings(broken, {})) == {
        *(f"{label}: get /health has responseTransferMode" for label in ("default", "false")),
        *(f"{label}: get /health invokes {STREAMING_URI}" for label in ("default", "false")),
        *(f"{label}: Timeout 30" for label in ("default", "false")),
    }
    assert _off_findings(conditional, {}) == ["the switch is used beyond an Fn::If"]


@pytest.mark.parametrize("mode", AUTH_MODES, ids=["ApiKey", "IAM"])
def test_on_every_api_function_route_streams_and_the_function_runs_the_streaming_loop(
    template: dict[str, Any], mode: dict[str, str]
) -> None:
    document = sam_transform(template, {**mode, "ResponseStreaming": "true"})

    # Every route, not only the image ones: under the loop every answer is prelude-framed (docs/streaming.md)
    integrations = _integrations(document)
    assert set(integrations) == _api_function_routes(template)
    for route, integration in integrations.items():
        assert integration["type"] == "aws_proxy", route
        assert integration["responseTransferMode"] == "STREAM", route
        assert _uri(integration) == STREAMING_URI, route
        assert integration["timeoutInMillis"] == STREAM_INTEGRATION_TIMEOUT_MS, route
    function = _api_lambda(document)
    assert function["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"] == f"{TASK_ROOT}bootstrap"
    assert function["Timeout"] == 300
    # The function's Timeout, not the 15-minute integration, is what ends a long stream
    assert function["Timeout"] * 1000 <= STREAM_INTEGRATION_TIMEOUT_MS
    # Only the API function changes: the worker, the trigger and the authorizer keep their runtime and timeouts
    buffered = sam_transform(template, mode)
    for name, resource in document["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function" and name != "ApiFunction":
            assert resource == buffered["Resources"][name], name


def test_the_streaming_timeout_is_the_functions_timeout(template: dict[str, Any]) -> None:
    document = sam_transform(template, {"ResponseStreaming": "true", "StreamingTimeoutSeconds": 900})
    assert _api_lambda(document)["Timeout"] == 900
    # Without the switch the parameter changes nothing
    assert _api_lambda(sam_transform(template, {"StreamingTimeoutSeconds": 900}))["Timeout"] == 29


def test_the_exec_wrapper_is_the_functions_committed_executable_bootstrap(template: dict[str, Any]) -> None:
    variables = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    wrapper = variables["AWS_LAMBDA_EXEC_WRAPPER"]["Fn::If"]
    assert wrapper[0] == SWITCH and wrapper[2] == {"Ref": "AWS::NoValue"}
    # /var/task is the function's CodeUri: the wrapper is a file of functions/api
    assert template["Resources"]["ApiFunction"]["Properties"]["CodeUri"] == "functions/api"
    relative = wrapper[1].removeprefix(TASK_ROOT)
    assert wrapper[1].startswith(TASK_ROOT) and (API_DIR / relative).is_file()
    # Git records it executable (a checkout makes it so), and it is a script the runtime can exec
    listed = subprocess.run(
        ["git", "ls-files", "-s", "--", f"functions/api/{relative}"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert listed.stdout.split()[0] == "100755", listed.stdout
    assert (API_DIR / relative).read_bytes().startswith(b"#!/bin/sh\n")


def _as_unprivileged_user(command: list[str], writable: Path) -> list[str]:
    """``command`` as a user other than root where the tests run as root: root's tar keeps archived modes whatever
    the umask, a developer's or CI's does not."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: the build's umask would not apply")
    os.chown(writable, NOBODY, NOBODY)  # sam build hands make an ARTIFACTS_DIR its user owns
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]


def test_the_function_build_keeps_bootstrap_executable() -> None:
    # Given a build by a user whose umask would strip the execute bits from what tar creates (in a directory of its
    # own under /tmp: pytest's tmp_path is closed to other users)
    with tempfile.TemporaryDirectory(prefix="api-build-") as directory:
        artifacts = Path(directory)
        command = _as_unprivileged_user(["make", "-s", "build-ApiFunction", f"ARTIFACTS_DIR={artifacts}"], artifacts)
        previous = os.umask(0o077)
        try:
            # When sam build's makefile target runs (what `sam build` runs with ARTIFACTS_DIR set)
            subprocess.run(command, cwd=API_DIR, check=True, timeout=120)
        finally:
            os.umask(previous)

        # Then bootstrap keeps the checkout's mode (sam build zips it as it finds it): executable and readable by the
        # runtime's user, who does not own the code
        mode = stat.S_IMODE((artifacts / "bootstrap").stat().st_mode)
        assert mode == stat.S_IMODE((API_DIR / "bootstrap").stat().st_mode), oct(mode)
        assert mode & 0o555 == 0o555, oct(mode)
        assert (artifacts / "runtime.py").is_file() and not (artifacts / "Makefile").exists()
