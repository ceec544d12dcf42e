"""template.yaml's SnapStart switch (docs/snapstart.md): off, the deployment is exactly what it was; on, every function
publishes a version behind the alias ``live`` with SnapStart, and everything that invokes a function invokes the alias.

Checked on the offline transform (devtools/sam_template.py: the AWS::LanguageExtensions port, then samtranslator),
never on AWS: no snapshot is taken or restored here.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from samtranslator.model.exceptions import InvalidDocumentException

from devtools.sam_template import load_template, parameter_values, sam_transform
from tests.infrastructure.test_streaming_template import _names_used, without_switch

pytestmark = pytest.mark.infra

SWITCH = "UseSnapStart"
ALIAS = "live"
FUNCTIONS = ("ApiFunction", "WorkerFunction", "S3TriggerFunction", "AuthorizerFunction")
AUTH_MODES = ({}, {"AuthMode": "IAM"})
ON = {"SnapStart": "true"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _of_type(document: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: resource for name, resource in document["Resources"].items() if resource["Type"] == kind}


def _mentions(node: Any, name: str) -> bool:
    return name in json.dumps(node)


def test_the_switch_is_off_unless_asked(template: dict[str, Any]) -> None:
    switch = template["Parameters"]["SnapStart"]
    assert (switch["Type"], switch["Default"], switch["AllowedValues"]) == ("String", "false", ["true", "false"])
    assert template["Conditions"][SWITCH] == {"Fn::Equals": [{"Ref": "SnapStart"}, "true"]}
    # Only through the condition, and only in Fn::If (a resource or output with the condition would not be "as today")
    before = without_switch(template, SWITCH)
    del before["Parameters"]["SnapStart"], before["Conditions"][SWITCH]
    assert not _mentions(before, SWITCH) and not _mentions(before, '"SnapStart"')


@pytest.mark.parametrize("mode", AUTH_MODES, ids=["ApiKey", "IAM"])
def test_off_the_deployment_is_exactly_the_one_without_the_switch(template: dict[str, Any], mode: dict[str, str]) -> None:
    before = without_switch(template, SWITCH)
    del before["Parameters"]["SnapStart"], before["Conditions"][SWITCH]
    expected = sam_transform(before, mode)

    for overrides in (mode, {**mode, "SnapStart": "false"}):
        document = sam_transform(template, overrides)
        assert document["Resources"] == expected["Resources"]
        assert document["Outputs"] == expected["Outputs"]
        # What that is: unpublished functions, invoked as themselves
        assert _of_type(document, "AWS::Lambda::Version") == {} and _of_type(document, "AWS::Lambda::Alias") == {}
        assert all("SnapStart" not in f["Properties"] for f in _of_type(document, "AWS::Lambda::Function").values())
        assert not _mentions(document["Resources"], f"Alias{ALIAS}")


def _target(value: Any) -> str:
    """The logical id a FunctionName, Function or ARN value refers to (Ref, GetAtt .Arn, or a ${...} in a Sub)."""
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0]) + ".Arn"
    if isinstance(value, dict) and "Fn::Sub" in value:
        text, names = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
        (placeholder,) = re.findall(r"/functions/\$\{([^}]+)\}/", text)
        return _target(names[placeholder]) if placeholder in names else placeholder
    raise AssertionError(f"unexpected reference {value!r}")


def _invocation_targets(document: dict[str, Any]) -> dict[str, str]:
    """Everything that invokes a function -> the logical id it invokes: API integrations and authorizers, Lambda
    permissions, event source mappings, bucket notifications."""
    targets: dict[str, str] = {}
    for api in _of_type(document, "AWS::ApiGateway::RestApi").values():
        body = api["Properties"]["Body"]
        for path, methods in body["paths"].items():
            for method, operation in methods.items():
                targets[f"integration {method} {path}"] = _target(operation["x-amazon-apigateway-integration"]["uri"])
        schemes = body.get("components", {}).get("securitySchemes", {}) | body.get("securityDefinitions", {})
        for name, scheme in schemes.items():
            if "x-amazon-apigateway-authorizer" in scheme:
                targets[f"authorizer {name}"] = _target(scheme["x-amazon-apigateway-authorizer"]["authorizerUri"])
    for name, permission in _of_type(document, "AWS::Lambda::Permission").items():
        targets[f"permission {name}"] = _target(permission["Properties"]["FunctionName"])
    for name, mapping in _of_type(document, "AWS::Lambda::EventSourceMapping").items():
        targets[f"mapping {name}"] = _target(mapping["Properties"]["FunctionName"])
    for name, bucket in _of_type(document, "AWS::S3::Bucket").items():
        for index, notification in enumerate(bucket["Properties"].get("NotificationConfiguration", {}).get("LambdaConfigurations", [])):
            targets[f"notification {name} {index}"] = _target(notification["Function"])
    return targets


@pytest.mark.parametrize("mode", AUTH_MODES, ids=["ApiKey", "IAM"])
def test_on_every_function_publishes_a_snapstart_version_behind_the_alias(template: dict[str, Any], mode: dict[str, str]) -> None:
    document = sam_transform(template, {**mode, **ON})
    functions = _of_type(document, "AWS::Lambda::Function")
    versions, aliases = _of_type(document, "AWS::Lambda::Version"), _of_type(document, "AWS::Lambda::Alias")

    assert set(functions) == set(FUNCTIONS)  # the authorizer under its condition in both modes (CloudFormation drops it)
    assert len(versions) == len(aliases) == len(functions)
    for name, function in functions.items():
        assert function["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}, name
        (version_id,) = [v for v, version in versions.items() if version["Properties"]["FunctionName"] == {"Ref": name}]
        # A replaced version is deleted, and its snapshot with it (a retained one would stay cached, and billed)
        assert versions[version_id]["DeletionPolicy"] == "Delete", name
        alias = aliases[f"{name}Alias{ALIAS}"]
        assert alias["Properties"] == {
            "Name": ALIAS,
            "FunctionName": {"Ref": name},
            "FunctionVersion": {"Fn::GetAtt": [version_id, "Version"]},
        }
        # They exist exactly when their function does
        assert versions[version_id].get("Condition") == alias.get("Condition") == function.get("Condition"), name


@pytest.mark.parametrize("mode", [{}, {"AuthMode": "IAM"}, {"ResponseStreaming": "true"}], ids=["ApiKey", "IAM", "streaming"])
def test_on_everything_that_invokes_a_function_invokes_its_alias(template: dict[str, Any], mode: dict[str, str]) -> None:
    on = _invocation_targets(sam_transform(template, {**mode, **ON}))
    off = _invocation_targets(sam_transform(template, mode))

    # The same invokers, each now on the alias of the function it invoked
    assert set(on) == set(off)
    assert {invoker: target for invoker, target in on.items() if target != off[invoker].removesuffix(".Arn") + f"Alias{ALIAS}"} == {}
    kinds = {invoker.split()[0] for invoker in on}
    assert kinds >= {"integration", "permission", "mapping", "notification"}
    if mode.get("AuthMode") != "IAM":
        assert on["authorizer BearerApiKey"] == f"AuthorizerFunctionAlias{ALIAS}"


def _resolved(node: Any, values: dict[str, Any]) -> Any:
    """``node`` with the parameters' Refs (and ${Parameter} in Fn::Sub strings) replaced by their values."""
    if isinstance(node, list):
        return [_resolved(item, values) for item in node]
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in values:
            return values[node["Ref"]]
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            return {"Fn::Sub": re.sub(r"\$\{([^}!.]+)\}", lambda m: str(values.get(m.group(1), m.group(0))), node["Fn::Sub"])}
        return {key: _resolved(value, values) for key, value in node.items()}
    return node


# A deployment where every parameter a function's configuration reads is in use, and another value for each
CONFIGURED = {
    **ON,
    "AzureOpenAIDeployments": '{"dall-e-3": "my-dalle3"}',
    "AzureOpenAIEndpoint": "https://one.openai.azure.com",
    "ResponseStreaming": "true",
}
CHANGES = {
    "ApiReservedConcurrency": "10",
    "AuthorizerReservedConcurrency": "10",
    "AzureOpenAIApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:azure",
    "AzureOpenAIApiVersion": "2025-04-01-preview",
    "AzureOpenAIDeployments": '{"dall-e-3": "other"}',
    "AzureOpenAIEndpoint": "https://two.openai.azure.com",
    "BedrockInferenceProfiles": "us.stability.sd3-5-large-v1:0",
    "BedrockModels": "amazon.nova-canvas-v1:0",
    "BflApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:bfl",
    "Budgets": '{"per_key": {"images_per_month": 10}}',
    "CacheTtlSeconds": 60,
    "DefaultModel": "dall-e-3",
    "GoogleApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:google",
    "JobTtlDays": 8,
    "LogLevel": "DEBUG",
    "MaxReceiveCount": 4,
    "ModelRegistryParameter": "/imagegen/registry",
    "OpenAIApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:openai",
    "OpenAIBaseUrl": "https://proxy.example/v1",
    "PresignTtlSeconds": 600,
    "ResponseStreaming": "false",
    "StabilityApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:stability",
    "StreamingTimeoutSeconds": 600,
    "UsageAdminKeys": "key-0123456789abcdef",
}
# SAM hashes a version's properties unresolved (aws/serverless-application-model#3820); the LanguageExtensions port
# resolves the parameters' Refs in Resources but not in Globals, where POWERTOOLS_LOG_LEVEL is set (docs/snapstart.md)
NOT_REPUBLISHED = {("LogLevel", name) for name in FUNCTIONS}


def _function_state(template: dict[str, Any], overrides: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Each function's configuration (parameters resolved, as CloudFormation would) and its version's logical id."""
    document = sam_transform(template, overrides)
    values = parameter_values(template, overrides)
    versions = _of_type(document, "AWS::Lambda::Version")
    return {
        name: (
            _resolved(function["Properties"], values),
            next(v for v, version in versions.items() if version["Properties"]["FunctionName"] == {"Ref": name}),
        )
        for name, function in _of_type(document, "AWS::Lambda::Function").items()
    }


def test_on_any_change_to_what_a_function_runs_publishes_a_new_version_of_it(template: dict[str, Any]) -> None:
    # Every parameter a function's properties read (directly or through a condition) is changed once
    used = set().union(_names_used(template["Globals"]), *(_names_used(template["Resources"][f]["Properties"]) for f in FUNCTIONS))
    conditions = template["Conditions"]
    while expanded := {n for c in used & set(conditions) for n in _names_used(conditions[c])} - used:
        used |= expanded
    read = used & set(template["Parameters"])
    assert read - {"SnapStart", "AuthMode"} == set(CHANGES), "a new parameter: add a changed value for it"
    base = _function_state(template, CONFIGURED)

    stale, changed = set(), set()
    for parameter, value in CHANGES.items():
        for name, (properties, version) in _function_state(template, {**CONFIGURED, parameter: value}).items():
            if properties != base[name][0]:
                changed.add((parameter, name))
                if version == base[name][1]:
                    stale.add((parameter, name))

    # Each change reached some function (else the check proves nothing), and each one a new version, but LogLevel's
    assert {parameter for parameter, _ in changed} == set(CHANGES)
    assert stale == NOT_REPUBLISHED


def test_on_a_new_layer_publishes_a_new_version_of_every_function(template: dict[str, Any]) -> None:
    changed = copy.deepcopy(template)
    changed["Resources"]["CommonLayer"]["Properties"]["Description"] += " (rebuilt)"  # what a new ContentUri does too

    before, after = _function_state(template, ON), _function_state(changed, ON)

    assert {name for name in FUNCTIONS if before[name][1] == after[name][1]} == set()
    # Off, the layer's versions are what they were (no PublishLambdaVersion)
    layers = _of_type(sam_transform(template), "AWS::Lambda::LayerVersion")
    assert all("PublishLambdaVersion" not in layer["Properties"] for layer in layers.values())


MINIMAL = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Transform": ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"],
    "Parameters": {"SnapStart": {"Type": "String", "Default": "false", "AllowedValues": ["true", "false"]}},
    "Conditions": {SWITCH: {"Fn::Equals": [{"Ref": "SnapStart"}, "true"]}},
    "Resources": {
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "CodeUri": "fn",
                "Handler": "app.handler",
                "Runtime": "python3.12",
                "AutoPublishAlias": {"Fn::If": [SWITCH, ALIAS, {"Ref": "AWS::NoValue"}]},
            },
        }
    },
}


def test_sam_alone_refuses_an_if_in_auto_publish_alias_which_the_language_extensions_resolve_first() -> None:
    # The pinned samtranslator takes a string or a Ref to a parameter there, nothing else
    without_extensions = {**copy.deepcopy(MINIMAL), "Transform": "AWS::Serverless-2016-10-31"}
    with pytest.raises(InvalidDocumentException, match="'AutoPublishAlias' must be a string or a Ref to a template parameter"):
        sam_transform(without_extensions, ON)

    # With AWS::LanguageExtensions first (as template.yaml declares), both values translate
    assert "FnAliaslive" in sam_transform(MINIMAL, ON)["Resources"]
    assert _of_type(sam_transform(MINIMAL, {"SnapStart": "false"}), "AWS::Lambda::Alias") == {}


@pytest.mark.parametrize("snapstart", ["true", "false"])
def test_sam_build_reads_every_function_of_the_template_either_way(snapstart: str) -> None:
    # What `sam build` (and so `make build` and `sam deploy`) parses the template with: SAM CLI's own function
    # provider, which type-checks each function's properties before any intrinsic is resolved (an !If where SAM
    # wants a boolean, AutoPublishAliasAllProperties once, failed every build while the transform tests passed).
    from samcli.lib.providers.sam_function_provider import SamFunctionProvider
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

    root = Path(__file__).resolve().parents[2]
    stacks, _ = SamLocalStackProvider.get_stacks(str(root / "template.yaml"), parameter_overrides={"SnapStart": snapstart})
    functions = {function.name for function in SamFunctionProvider(stacks).get_all()}
    assert functions == {"ApiFunction", "AuthorizerFunction", "WorkerFunction", "S3TriggerFunction"}
