"""Deprecated: the names that lived here before the split, re-exported for code not yet moved (tests, bench). New
code imports from :mod:`imagegen.specs` (spec types, the catalog), :mod:`imagegen.planning` (request -> plan),
:mod:`imagegen.registry_document` (the document's schema) and :mod:`imagegen.registry` (the deployment's models)."""

from __future__ import annotations

from imagegen.planning import GenerationPlan
from imagegen.registry import ModelRegistry, build_registry
from imagegen.registry_document import ModelChoice, RegistryDocument
from imagegen.specs import (
    AZURE_PREFIX,
    BEDROCK_GEO_PREFIXES,
    IMAGE_OVERHEAD_BYTES,
    OPAQUE_BYTES_PER_PIXEL,
    TRANSPARENT_BYTES_PER_PIXEL,
    CustomSizeRule,
    ModelFamily,
    ModelSpec,
    ProviderName,
    azure_models,
    bedrock_base_id,
    catalog,
    catalog_spec,
)

RegistryConfig = RegistryDocument
_catalog = catalog()
CATALOG = {spec.id: spec for spec in _catalog.specs}
LOCAL_MODEL = _catalog["local"]
OPENAI_MODELS = _catalog.of("openai")
BEDROCK_MODELS = _catalog.of("bedrock")
STABILITY_SIZES = _catalog["stability.sd3-5-large-v1:0"].sizes
NOVA_CANVAS_SIZES = _catalog["amazon.nova-canvas-v1:0"].custom_sizes
TITAN_V2_SIZES = _catalog["amazon.titan-image-generator-v2:0"].sizes

__all__ = [
    "AZURE_PREFIX",
    "BEDROCK_GEO_PREFIXES",
    "BEDROCK_MODELS",
    "CATALOG",
    "IMAGE_OVERHEAD_BYTES",
    "LOCAL_MODEL",
    "NOVA_CANVAS_SIZES",
    "OPAQUE_BYTES_PER_PIXEL",
    "OPENAI_MODELS",
    "STABILITY_SIZES",
    "TITAN_V2_SIZES",
    "TRANSPARENT_BYTES_PER_PIXEL",
    "CustomSizeRule",
    "GenerationPlan",
    "ModelChoice",
    "ModelFamily",
    "ModelRegistry",
    "ModelSpec",
    "ProviderName",
    "RegistryConfig",
    "RegistryDocument",
    "azure_models",
    "bedrock_base_id",
    "build_registry",
    "catalog_spec",
]
