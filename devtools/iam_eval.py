"""Least privilege, checked: every AWS call the tests recorded (devtools.aws_calls) evaluated against the role the
deployed function would have, by a real IAM policy evaluator.

- The roles come from template.yaml as CloudFormation gets it (devtools.sam_template: AWS::LanguageExtensions,
  then the SAM transform) for one deployment's parameters (tests/iam/deployment.json), their intrinsics resolved
  by SAM CLI's own resolver (``samcli.lib.intrinsic_resolver``) with each resource's physical name and ARN as
  CloudFormation would make them. AWS managed policies (AWSLambdaBasicExecutionRole, AWSXrayWriteOnlyAccess, ...)
  come from moto's snapshot of AWS's managed policy documents (``moto.iam.aws_managed_policies``).
- A call's names are the test's (random buckets, tables, queues): each is replaced by the deployed resource that
  the environment variable the function read it from names in the template (``IMAGES_BUCKET: !Ref
  ImagesBucket``...). Regions and accounts are the deployment's. A name no variable gave is itself a finding.
- The evaluator is @cloud-copilot/iam-simulate (npm, run by node from ``.venv/iam-simulate``, installed from
  devtools/iam_simulate's lock on first use): identity policies with Action/NotAction, Resource/NotResource,
  wildcards, every condition operator and explicit Deny, and the template's own bucket and queue policies as
  resource policies; it also rejects an action AWS does not have and a resource ARN of a type the action does
  not take. Conditions see the context AWS sets on the deployed function's requests (``Deployment.context``).
- Calls of the local event source mapping (devtools.poller.SqsPoller) are evaluated against the role of the
  function the template maps that queue to, as Lambda's pollers use it.

What it cannot see: a real account's SCPs, RCPs and permission boundaries, KMS key policies, Bedrock model access
(not IAM), and the destination regions of an inference profile (only the profile and the deployment region's
foundation model are checked).

    python -m devtools.iam_eval <calls directory>    # prints the report
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devtools.aws_calls import EVENT_SOURCE_MAPPING, Call, read_calls
from devtools.sam_template import TEMPLATE, load_template, parameter_values, sam_transform

REPO_ROOT = Path(__file__).resolve().parents[1]
ACTIONS_FILE = Path(__file__).with_name("iam_actions.json")
SIMULATOR_SOURCE = Path(__file__).with_name("iam_simulate")
SIMULATOR_HOME = REPO_ROOT / ".venv" / "iam-simulate"
DEPLOYMENT_FILE = REPO_ROOT / "tests" / "iam" / "deployment.json"
ALLOWLIST_FILE = REPO_ROOT / "tests" / "iam" / "unexercised_grants.json"
# CloudFormation names a resource without an explicit name <stack>-<LogicalId>-<random suffix>.
GENERATED_SUFFIX = "A1B2C3D4E5F6"


class EvaluatorUnavailable(RuntimeError):
    """node/npm missing, or the evaluator could not be installed or run."""


@functools.lru_cache(maxsize=1)
def action_rules() -> dict[str, Any]:
    rules: dict[str, Any] = json.loads(ACTIONS_FILE.read_text())
    return rules


# --- the deployment ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionRole:
    """A function as deployed: its code directory name, logical ids, role and the environment the template gives."""

    function: str
    logical_id: str
    name: str
    role_logical_id: str
    role_name: str
    policies: tuple[tuple[str, dict[str, Any]], ...]
    env: Mapping[str, str]


@dataclass(frozen=True)
class Deployment:
    account: str
    region: str
    partition: str
    functions: Mapping[str, FunctionRole]
    # queue ARN -> function (code directory) fed by its event source mapping
    event_sources: Mapping[str, str]
    # bucket or queue ARN -> its resource policy (AWS::S3::BucketPolicy, AWS::SQS::QueuePolicy)
    resource_policies: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def resource_policy(self, resource: str) -> dict[str, Any] | None:
        """The policy of the bucket an object or bucket ARN is in, or of the queue an ARN names."""
        if resource.startswith("arn:aws:s3:::"):
            resource = resource.split("/", 1)[0]
        return self.resource_policies.get(resource)

    def principal(self, role: FunctionRole) -> str:
        return f"arn:{self.partition}:sts::{self.account}:assumed-role/{role.role_name}/{role.name}"

    def context(self, role: FunctionRole) -> dict[str, str]:
        """The global condition keys AWS sets on every request a function's role session makes from the deployed
        function: its region, TLS (the SDK's endpoints are HTTPS), and who the principal is."""
        return {
            "aws:RequestedRegion": self.region,
            "aws:SecureTransport": "true",
            "aws:PrincipalArn": f"arn:{self.partition}:iam::{self.account}:role/{role.role_name}",
            "aws:PrincipalAccount": self.account,
            "aws:PrincipalType": "AssumedRole",
        }


def _physical(logical_id: str, resource: Mapping[str, Any], resolve: Any, stack: str, region: str, account: str) -> dict[str, Any]:
    """What Ref and Fn::GetAtt give for a resource once CloudFormation has created it."""
    kind = resource.get("Type", "")
    props = resource.get("Properties", {}) or {}
    generated = f"{stack}-{logical_id}-{GENERATED_SUFFIX}"

    def name(prop: str) -> str:
        value = resolve(props[prop]) if prop in props else None
        return str(value) if value else generated

    if kind == "AWS::S3::Bucket":
        bucket = name("BucketName").lower()
        return {"Ref": bucket, "Arn": f"arn:aws:s3:::{bucket}", "DomainName": f"{bucket}.s3.amazonaws.com"}
    if kind == "AWS::DynamoDB::Table":
        table = name("TableName")
        return {"Ref": table, "Arn": f"arn:aws:dynamodb:{region}:{account}:table/{table}"}
    if kind == "AWS::SQS::Queue":
        queue = name("QueueName")
        url = f"https://sqs.{region}.amazonaws.com/{account}/{queue}"
        return {"Ref": url, "QueueUrl": url, "QueueName": queue, "Arn": f"arn:aws:sqs:{region}:{account}:{queue}"}
    if kind == "AWS::Lambda::Function":
        function = name("FunctionName")
        return {"Ref": function, "Arn": f"arn:aws:lambda:{region}:{account}:function:{function}"}
    if kind == "AWS::IAM::Role":
        role = name("RoleName")
        return {"Ref": role, "Arn": f"arn:aws:iam::{account}:role/{role}"}
    if kind == "AWS::SSM::Parameter":
        return {"Ref": name("Name")}
    if kind == "AWS::SecretsManager::Secret":
        arn = f"arn:aws:secretsmanager:{region}:{account}:secret:{name('Name')}-AbCdEf"
        return {"Ref": arn, "Id": arn}
    if kind == "AWS::SNS::Topic":
        arn = f"arn:aws:sns:{region}:{account}:{name('TopicName')}"
        return {"Ref": arn, "TopicArn": arn}
    return {"Ref": generated, "Arn": f"arn:aws:cloudformation:{region}:{account}:{logical_id}"}


def _drop_no_value(value: Any) -> Any:
    """AWS::NoValue (None after resolution) removes the list entry or key it stands in."""
    if isinstance(value, list):
        return [_drop_no_value(item) for item in value if item is not None]
    if isinstance(value, dict):
        return {key: _drop_no_value(item) for key, item in value.items() if item is not None}
    return value


@functools.lru_cache(maxsize=1)
def managed_policies() -> dict[str, dict[str, Any]]:
    """AWS managed policy documents by name (moto's snapshot of AWS's)."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return {name: entry["Document"] for name, entry in json.loads(aws_managed_policies_data).items()}


def load_deployment(
    template_path: Path = TEMPLATE, deployment_file: Path = DEPLOYMENT_FILE, template: Mapping[str, Any] | None = None
) -> Deployment:
    """The functions' roles, environments and event sources of the deployment ``deployment_file`` describes."""
    from samcli.lib.intrinsic_resolver.intrinsic_property_resolver import IntrinsicResolver
    from samcli.lib.intrinsic_resolver.intrinsics_symbol_table import IntrinsicsSymbolTable

    settings = json.loads(deployment_file.read_text())
    stack, account, region = settings["stack_name"], settings["account"], settings["region"]
    source = dict(template) if template is not None else load_template(template_path)
    overrides = settings.get("parameters", {})
    transformed = sam_transform(source, overrides)
    translator: dict[str, Any] = {
        "AWS::AccountId": account,
        "AWS::Region": region,
        "AWS::Partition": "aws",
        "AWS::StackName": stack,
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackId": f"arn:aws:cloudformation:{region}:{account}:stack/{stack}/00000000-0000-0000-0000-000000000000",
        **parameter_values(source, overrides),
    }
    # Parameters are given: the symbol table must not fall back to the template's defaults for them.
    for name, value in list(translator.items()):
        if isinstance(value, int | float | bool):
            translator[name] = str(value)
    symbols = IntrinsicsSymbolTable(template=transformed, logical_id_translator=translator)
    resolver = IntrinsicResolver(template=transformed, symbol_resolver=symbols)

    def resolve(value: Any) -> Any:
        return _drop_no_value(resolver.intrinsic_property_resolver(value, ignore_errors=False))

    resources: dict[str, Any] = transformed["Resources"]
    for logical_id, resource in resources.items():
        translator[logical_id] = _physical(logical_id, resource, resolve, stack, region, account)

    code_dirs = {
        logical_id: Path(str(resource["Properties"]["CodeUri"])).name
        for logical_id, resource in source["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(resource.get("Properties", {}).get("CodeUri"), str)
    }
    functions: dict[str, FunctionRole] = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Lambda::Function" or logical_id not in code_dirs:
            continue
        props = resource["Properties"]
        role_ref = props["Role"]
        if not (isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref):
            raise ValueError(f"{logical_id}: Role is not a role of this template ({role_ref!r})")
        role_id = role_ref["Fn::GetAtt"][0]
        role_props = resources[role_id]["Properties"]
        policies: list[tuple[str, dict[str, Any]]] = []
        for policy in resolve(role_props.get("Policies", [])):
            policies.append((str(policy["PolicyName"]), policy["PolicyDocument"]))
        for arn in resolve(role_props.get("ManagedPolicyArns", [])):
            policy_name = str(arn).rsplit("/", 1)[-1]
            if policy_name not in managed_policies():
                raise ValueError(f"{role_id}: no document for managed policy {arn}")
            policies.append((policy_name, managed_policies()[policy_name]))
        env = resolve(props.get("Environment", {}).get("Variables", {}))
        functions[code_dirs[logical_id]] = FunctionRole(
            function=code_dirs[logical_id],
            logical_id=logical_id,
            name=translator[logical_id]["Ref"],
            role_logical_id=role_id,
            role_name=translator[role_id]["Ref"],
            policies=tuple(policies),
            env={name: str(value) for name, value in env.items()},
        )
    by_logical = {role.logical_id: role.function for role in functions.values()}
    event_sources: dict[str, str] = {}
    for resource in resources.values():
        if resource.get("Type") == "AWS::Lambda::EventSourceMapping":
            props = resource["Properties"]
            target = props["FunctionName"]
            logical = target.get("Ref") if isinstance(target, dict) else None
            if logical in by_logical:
                event_sources[str(resolve(props["EventSourceArn"]))] = by_logical[logical]
    policies: dict[str, dict[str, Any]] = {}
    queue_arns = {entry["Ref"]: entry["Arn"] for entry in translator.values() if isinstance(entry, dict) and "QueueUrl" in entry}
    for resource in resources.values():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::S3::BucketPolicy":
            policies[f"arn:aws:s3:::{resolve(props['Bucket'])}"] = resolve(props["PolicyDocument"])
        elif resource.get("Type") == "AWS::SQS::QueuePolicy":
            for url in resolve(props["Queues"]):
                policies[queue_arns[url]] = resolve(props["PolicyDocument"])
    return Deployment(
        account=account, region=region, partition="aws", functions=functions, event_sources=event_sources, resource_policies=policies
    )


# --- calls -> IAM requests ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorization AWS makes for a call: which role, which action, on which resource."""

    function: str
    action: str
    resource: str
    # Request context keys of this request beyond the ones every request of the role has (Deployment.context).
    context: tuple[tuple[str, str], ...] = ()


@dataclass
class Finding:
    """A request the role does not allow (or that the evaluator refused as malformed), with the calls behind it."""

    request: Request
    decision: str
    calls: list[Call] = field(default_factory=list)
    # Variables the call's names came from that the template does not give this function.
    foreign_env: list[str] = field(default_factory=list)

    def describe(self) -> str:
        tests = sorted({call.test for call in self.calls if call.test})
        local = sorted({f"{call.service}:{call.operation} {json.dumps(call.params, sort_keys=True)}" for call in self.calls})
        where = f"; tests: {', '.join(tests[:3])}{' ...' if len(tests) > 3 else ''}" if tests else ""
        foreign = (
            f"; the template does not give {self.request.function} {', '.join(self.foreign_env)}: the test's environment did"
            if self.foreign_env
            else ""
        )
        return (
            f"{self.decision}: function {self.request.function} {self.request.action} on {self.request.resource} "
            f"(recorded as {local[0]}{' ...' if len(local) > 1 else ''}{where}{foreign})"
        )


class NameMap:
    """Local names -> deployed names, learnt from the environment variables the calls' names came from."""

    def __init__(self, deployment: Deployment, calls: Iterable[Call]) -> None:
        deployed: dict[str, str] = {}
        for role in deployment.functions.values():
            for var, value in role.env.items():
                if deployed.setdefault(var, value) != value:
                    raise ValueError(f"{var} names two different resources in the template: {deployed[var]} and {value}")
        self.names: dict[str, str] = {}
        self.conflicts: list[str] = []
        for call in calls:
            for var, local in call.env.items():
                if var not in deployed:
                    continue
                previous = self.names.setdefault(local, deployed[var])
                if previous != deployed[var]:
                    self.conflicts.append(f"{local!r} is both {previous} and {deployed[var]} (by {var})")

    def get(self, local: str) -> str | None:
        return self.names.get(local)


class Unmapped(ValueError):
    """A call's resource name no environment variable of the template gave."""


def _iam_action(call: Call) -> str:
    prefix = action_rules()["prefixes"].get(call.service, call.service)
    return f"{prefix}:{call.operation}"


def requests_for(call: Call, deployment: Deployment, names: NameMap) -> list[Request]:
    """The authorizations AWS makes for ``call`` in the deployment (raises Unmapped for a name it cannot place)."""
    rules = action_rules()
    action = _iam_action(call)
    prefix = action.split(":", 1)[0]
    region, account = deployment.region, deployment.account
    params = call.params
    function = call.function
    if call.via == EVENT_SOURCE_MAPPING:
        function = ""

    def mapped(key: str) -> str:
        local = params.get(key)
        if not isinstance(local, str):
            raise Unmapped(f"{action}: no {key} parameter")
        value = names.get(local)
        if value is None:
            raise Unmapped(f"{action}: {key} {local!r} is not named by any environment variable the template sets")
        return value

    actions = list(rules["actions"].get(action, [action]))
    if action in rules["wildcard_only"]:
        return [Request(function, action, "*")]
    if prefix == "s3":
        bucket = mapped("Bucket")
        if "Delete" in params:
            return [Request(function, a, f"arn:aws:s3:::{bucket}/{key}") for a in actions for key in params["Delete"]]
        if isinstance(params.get("Key"), str):
            return [Request(function, a, f"arn:aws:s3:::{bucket}/{params['Key']}") for a in actions]
        listing = (("s3:prefix", params["Prefix"]),) if isinstance(params.get("Prefix"), str) else ()
        return [Request(function, a, f"arn:aws:s3:::{bucket}", listing) for a in actions]
    if prefix == "dynamodb":
        if "TransactItems" in params:
            out = []
            for item in params["TransactItems"]:
                for kind, body in item.items():
                    table = names.get(body.get("TableName", "")) or _raise_unmapped(action, body.get("TableName"))
                    out.append(Request(function, rules["transact_actions"][kind], f"arn:aws:dynamodb:{region}:{account}:table/{table}"))
            return out
        tables = [names.get(t) or _raise_unmapped(action, t) for t in params.get("RequestItems", [])] or [mapped("TableName")]
        return [Request(function, a, f"arn:aws:dynamodb:{region}:{account}:table/{t}") for a in actions for t in tables]
    if prefix == "sqs":
        path = urlsplit(mapped("QueueUrl")).path.strip("/").split("/")
        queue_arn = f"arn:aws:sqs:{region}:{path[0]}:{path[1]}"
        if call.via == EVENT_SOURCE_MAPPING:
            function = deployment.event_sources.get(queue_arn, "")
            if not function:
                raise Unmapped(f"{action}: no event source mapping in the template reads {queue_arn}")
        return [Request(function, a, queue_arn) for a in actions]
    if prefix == "secretsmanager":
        secret = mapped("SecretId")
        if not secret.startswith("arn:"):
            secret = f"arn:aws:secretsmanager:{region}:{account}:secret:{secret}-AbCdEf"
        return [Request(function, a, secret) for a in actions]
    if prefix == "ssm":
        names_given = params.get("Names")
        keys: list[Any] = names_given if isinstance(names_given, list) else [params.get("Name")]
        out = []
        for local in keys:
            parameter = names.get(str(local)) or _raise_unmapped(action, local)
            parameter_path = parameter if parameter.startswith("/") else f"/{parameter}"
            arn = parameter if parameter.startswith("arn:") else f"arn:aws:ssm:{region}:{account}:parameter{parameter_path}"
            out.extend(Request(function, a, arn) for a in actions)
        return out
    if prefix == "bedrock":
        model = str(params.get("modelId", ""))
        if model.startswith("arn:"):
            return [Request(function, a, model) for a in actions]
        profile_prefix = next((p for p in rules["inference_profile_prefixes"] if model.startswith(p)), None)
        if profile_prefix is None:
            return [Request(function, a, f"arn:aws:bedrock:{region}::foundation-model/{model}") for a in actions]
        # Through a profile Bedrock authorizes the profile, then the foundation model in the region the call is
        # routed to, with the profile's ARN in bedrock:InferenceProfileArn (only this region is checked here).
        profile = f"arn:aws:bedrock:{region}:{account}:inference-profile/{model}"
        foundation = f"arn:aws:bedrock:{region}::foundation-model/{model[len(profile_prefix) :]}"
        via_profile = (("bedrock:InferenceProfileArn", profile),)
        return [Request(function, a, profile) for a in actions] + [Request(function, a, foundation, via_profile) for a in actions]
    raise Unmapped(f"{action}: no rule for the resources of service {prefix!r} (add one to devtools/iam_eval.py)")


def _raise_unmapped(action: str, local: Any) -> str:
    raise Unmapped(f"{action}: {local!r} is not named by any environment variable the template sets")


# --- the evaluator ------------------------------------------------------------------------------------------------


def _simulator_stamp() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json", "simulate.mjs"):
        digest.update((SIMULATOR_SOURCE / name).read_bytes())
    return digest.hexdigest()[:16]


def ensure_simulator(home: Path = SIMULATOR_HOME) -> Path:
    """The evaluator installed from devtools/iam_simulate's lock (``npm ci``), in ``home/<hash of its files>``: each
    version is installed once, in a directory of its own renamed into place when complete, so that test sessions
    running at the same time never see a half-installed one."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise EvaluatorUnavailable("node and npm are needed to evaluate IAM policies (Debian: apt-get install nodejs npm)")
    installed = home / _simulator_stamp()
    if (installed / "node_modules").is_dir():
        return installed
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".installing-", dir=home))
    try:
        for name in ("package.json", "package-lock.json", "simulate.mjs"):
            shutil.copyfile(SIMULATOR_SOURCE / name, staging / name)
        install = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        result = subprocess.run(install, cwd=staging, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise EvaluatorUnavailable(f"npm ci for the IAM evaluator failed: {result.stderr.strip()[-2000:]}")
        try:
            staging.rename(installed)
        except OSError:  # another session installed the same version first
            if not (installed / "node_modules").is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return installed


def simulate(roles: Mapping[str, Sequence[tuple[str, dict[str, Any]]]], requests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Run the evaluator once over every request; returns its ``grants`` and ``results``."""
    home = ensure_simulator()
    payload = {
        "roles": {role: [{"name": name, "policy": policy} for name, policy in policies] for role, policies in roles.items()},
        "requests": list(requests),
    }
    node = shutil.which("node") or "node"
    result = subprocess.run(
        [node, str(home / "simulate.mjs")], input=json.dumps(payload), capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise EvaluatorUnavailable(f"the IAM evaluator failed: {result.stderr.strip()[-2000:]}")
    output: dict[str, Any] = json.loads(result.stdout)
    return output


# --- the report --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One action pattern on one resource pattern that a function's role allows."""

    function: str
    policy: str
    statement: str
    action: str
    resource: str

    def key(self) -> tuple[str, str, str]:
        return (self.function, self.action, self.resource)


@dataclass
class Report:
    calls: int
    requests: int
    allowed: int
    denied: list[Finding]
    unmapped: list[str]
    unexercised: list[Grant]
    exercised: list[Grant]
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.denied and not self.unmapped

    def lines(self) -> list[str]:
        out = [
            f"IAM evaluation: {self.calls} recorded AWS calls -> {self.requests} distinct requests: "
            f"{self.allowed} allowed, {len(self.denied)} denied, {len(self.unmapped)} not mappable to the template"
        ]
        out += [f"  DENIED {finding.describe()}" for finding in self.denied]
        out += [f"  UNMAPPED {problem}" for problem in self.unmapped]
        out += [f"  SKIPPED (an event source mapping's poll of a queue no function named) {problem}" for problem in self.skipped]
        out.append(f"granted but exercised by no test ({len(self.unexercised)}):")
        out += [f"  {grant.function}: {grant.action} on {grant.resource} ({grant.policy}/{grant.statement})" for grant in self.unexercised]
        out.append(f"granted and exercised ({len(self.exercised)}):")
        out += [f"  {grant.function}: {grant.action} on {grant.resource} ({grant.policy}/{grant.statement})" for grant in self.exercised]
        return out


def evaluate(calls: Sequence[Call], deployment: Deployment | None = None) -> Report:
    """Every call's requests evaluated against its function's role; every grant marked exercised or not."""
    deployment = deployment or load_deployment()
    names = NameMap(deployment, calls)
    unmapped: list[str] = list(names.conflicts)
    behind: dict[Request, list[Call]] = defaultdict(list)
    skipped: list[str] = []
    for call in calls:
        try:
            requests = requests_for(call, deployment, names)
        except Unmapped as problem:
            message = f"function {call.function or call.via}: {problem}" + (f" (test {call.test})" if call.test else "")
            # The local event source mapping polls the queue of its stack, which no variable of a poller names: a
            # stack whose functions never named their queue (no job ran) leaves its polls unplaced, not wrong.
            found = skipped if call.via == EVENT_SOURCE_MAPPING else unmapped
            if message not in found:
                found.append(message)
            continue
        for request in requests:
            if request.function not in deployment.functions:
                message = f"{request.action} on {request.resource}: function {request.function!r} is not in the template"
                if message not in unmapped:
                    unmapped.append(message)
                continue
            behind[request].append(call)
    ordered = list(behind)
    roles = {role.function: list(role.policies) for role in deployment.functions.values()}
    payload = [
        {
            "id": str(index),
            "role": request.function,
            "principal": deployment.principal(deployment.functions[request.function]),
            "action": request.action,
            "resource": request.resource,
            "accountId": deployment.account,
            "context": {**deployment.context(deployment.functions[request.function]), **dict(request.context)},
            "resourcePolicy": deployment.resource_policy(request.resource),
        }
        for index, request in enumerate(ordered)
    ]
    output = simulate(roles, payload)
    denied: list[Finding] = []
    exercised_keys: set[tuple[str, str, str, str, str]] = set()
    for result in output["results"]:
        request = ordered[int(result["id"])]
        if result["decision"] == "Allowed":
            for match in result["matched"]:
                for action in match["actions"]:
                    for resource in match["resources"]:
                        exercised_keys.add((request.function, match["policy"], match["statement"], action, resource))
            continue
        decision = result["decision"] or f"Invalid request ({json.dumps(result['error'])})"
        given = deployment.functions[request.function].env
        foreign = sorted({var for call in behind[request] for var in call.env if var not in given})
        denied.append(Finding(request, decision, behind[request], foreign))
    exercised: list[Grant] = []
    unexercised: list[Grant] = []
    for grant in output["grants"]:
        if grant["effect"] != "Allow":
            continue
        for action in grant["actions"] or [f"NotAction {grant['notActions']}"]:
            for resource in grant["resources"] or [f"NotResource {grant['notResources']}"]:
                item = Grant(grant["role"], grant["policy"], grant["statement"], action, resource)
                key = (item.function, item.policy, item.statement, action, resource)
                (exercised if key in exercised_keys else unexercised).append(item)
    return Report(
        calls=len(calls),
        requests=len(ordered),
        allowed=len(ordered) - len(denied),
        denied=denied,
        unmapped=unmapped,
        unexercised=unexercised,
        exercised=exercised,
        skipped=skipped,
    )


@dataclass(frozen=True)
class AllowedUnexercised:
    function: str
    action: str
    resource: str
    why: str

    def covers(self, grant: Grant) -> bool:
        return self.function in ("*", grant.function) and self.action == grant.action and self.resource == grant.resource


def load_allowlist(path: Path = ALLOWLIST_FILE) -> list[AllowedUnexercised]:
    entries = json.loads(path.read_text())["grants"]
    allowed = [AllowedUnexercised(**entry) for entry in entries]
    for entry in allowed:
        if not entry.why.strip():
            raise ValueError(f"{path}: every entry says why ({entry})")
    return allowed


def new_unexercised(report: Report, allowlist: Sequence[AllowedUnexercised]) -> list[Grant]:
    """Grants no test exercised that the allow-list does not explain."""
    return [grant for grant in report.unexercised if not any(entry.covers(grant) for entry in allowlist)]


def stale_allowlist(report: Report, allowlist: Sequence[AllowedUnexercised]) -> list[AllowedUnexercised]:
    """Allow-list entries that explain no grant the roles have now (the template changed): to be removed."""
    grants = [*report.unexercised, *report.exercised]
    return [entry for entry in allowlist if not any(entry.covers(grant) for grant in grants)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.iam_eval", description=__doc__.splitlines()[0])
    parser.add_argument("calls", type=Path, help="a directory of calls-*.jsonl written by devtools.aws_calls")
    args = parser.parse_args(argv)
    report = evaluate(read_calls(args.calls))
    print("\n".join(report.lines()))
    allowlist = load_allowlist()
    for entry in stale_allowlist(report, allowlist):
        print(f"STALE ALLOW-LIST ENTRY (no such grant now) {entry.function}: {entry.action} on {entry.resource}")
    fresh = new_unexercised(report, allowlist)
    for grant in fresh:
        print(f"NEW UNEXERCISED GRANT {grant.function}: {grant.action} on {grant.resource}", file=sys.stderr)
    return 0 if report.ok and not fresh else 1


if __name__ == "__main__":
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.exit(main())
