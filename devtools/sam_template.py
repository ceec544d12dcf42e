"""template.yaml as CloudFormation gets it, offline: the AWS::LanguageExtensions transform, then the SAM transform.

CloudFormation runs the template's two transforms in order. The first resolves what parameters decide (the
``!If`` on ``AuthMode`` in ImageApi's ``Auth``, which SAM alone refuses); this module runs SAM CLI's port of it
(``samcli.lib.cfn_language_extensions``, a port of CloudFormation's own, which SAM CLI runs locally only when
language extensions are enabled), then samtranslator, with local code URIs replaced as ``sam deploy`` would
upload them. The security scan and the infrastructure tests read the result. It is evidence, not proof: the
hosted transform is what deploys (docs/deploy.md says how to check a change set before the first deployment).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "template.yaml"
LANGUAGE_EXTENSIONS = "AWS::LanguageExtensions"
REGION = "us-east-1"


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as written (short-form intrinsics such as ``!If`` become ``Fn::If`` mappings)."""
    from cfnlint.decode import cfn_yaml

    loaded: dict[str, Any] = cfn_yaml.load(str(path))
    return loaded


def parameter_values(template: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter's value, as a deployment with ``overrides`` would get it (defaults otherwise)."""
    values: dict[str, Any] = {}
    for name, spec in template.get("Parameters", {}).items():
        if "Default" in spec:
            values[name] = spec["Default"]
    values.update(overrides or {})
    unknown = set(overrides or {}) - set(template.get("Parameters", {}))
    if unknown:
        raise ValueError(f"no such template parameter: {sorted(unknown)}")
    return values


def resolve_language_extensions(template: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The template after AWS::LanguageExtensions has resolved the conditions parameters decide, its transform
    dropped. Only Fn::If and what conditions are made of (Ref, Fn::Join, Fn::Split, Fn::Select) are resolved:
    the port's Fn::Sub drops the function around a placeholder it cannot fill (``${Bucket.Arn}/x`` becomes a
    plain string), where CloudFormation keeps it; nothing else here changes what the SAM transform sees."""
    from samcli.lib.cfn_language_extensions.api import IntrinsicResolverProcessor
    from samcli.lib.cfn_language_extensions.models import ResolutionMode, TemplateProcessingContext
    from samcli.lib.cfn_language_extensions.pipeline import ProcessingPipeline
    from samcli.lib.cfn_language_extensions.processors import TemplateParsingProcessor
    from samcli.lib.cfn_language_extensions.resolvers import (
        ConditionResolver,
        FnIfResolver,
        FnJoinResolver,
        FnRefResolver,
        FnSelectResolver,
        FnSplitResolver,
        IntrinsicResolver,
    )

    context = TemplateProcessingContext(
        fragment=copy.deepcopy(dict(template)), parameter_values=dict(parameters), resolution_mode=ResolutionMode.PARTIAL
    )
    resolver = IntrinsicResolver(context)
    for kind in (ConditionResolver, FnIfResolver, FnRefResolver, FnJoinResolver, FnSplitResolver, FnSelectResolver):
        resolver.register_resolver(kind)
    processed: dict[str, Any] = ProcessingPipeline([TemplateParsingProcessor(), IntrinsicResolverProcessor(resolver)]).process_template(
        context
    )
    transforms = processed.get("Transform", [])
    remaining = [name for name in ([transforms] if isinstance(transforms, str) else transforms) if name != LANGUAGE_EXTENSIONS]
    processed["Transform"] = remaining[0] if len(remaining) == 1 else remaining
    return processed


def sam_transform(template: Mapping[str, Any], parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What CloudFormation deploys for ``template`` with these parameter overrides (defaults otherwise)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    values = parameter_values(template, parameters)
    document = copy.deepcopy(dict(template))
    transforms = document.get("Transform", [])
    if LANGUAGE_EXTENSIONS in ([transforms] if isinstance(transforms, str) else transforms):
        document = resolve_language_extensions(document, values)
    for resource in document["Resources"].values():
        for uri in ("CodeUri", "ContentUri"):
            if uri in resource.get("Properties", {}):
                resource["Properties"][uri] = "s3://artifacts/code.zip"
    # Offline there is no feature-toggle config: quiet its "Feature ... not available" warnings.
    logging.getLogger("samtranslator.feature_toggle").setLevel(logging.ERROR)
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=REGION))
    result: dict[str, Any] = translator.translate(document, parameter_values=values, get_managed_policy_map=dict)
    return result
