"""Providers behind one interface, built once per container."""

from __future__ import annotations

from functools import cache

from imagegen.providers.base import ImageProvider, ProviderImage, ProviderResult
from imagegen.specs import ProviderName

__all__ = ["ImageProvider", "ProviderImage", "ProviderResult", "get_provider"]


@cache
def get_provider(name: ProviderName) -> ImageProvider:
    if name == "openai":
        from imagegen.clients import http_client, openai_api_key
        from imagegen.providers.openai import OpenAIProvider
        from imagegen.settings import get_settings

        settings = get_settings()
        return OpenAIProvider(
            http_client(), base_url=str(settings.openai_base_url), api_key=openai_api_key, max_retries=settings.provider_max_retries
        )
    if name == "azure":
        from imagegen.clients import azure_openai_api_key, http_client
        from imagegen.providers.openai import OpenAIProvider, azure_endpoint
        from imagegen.settings import get_settings

        settings = get_settings()
        assert settings.azure_openai_endpoint is not None  # the registry serves Azure models only when configured
        return OpenAIProvider(
            http_client(),
            endpoint=azure_endpoint(str(settings.azure_openai_endpoint), settings.azure_openai_api_version),
            api_key=azure_openai_api_key,
            max_retries=settings.provider_max_retries,
        )
    if name == "bedrock":
        from imagegen.clients import bedrock_runtime_client
        from imagegen.providers.bedrock import BedrockProvider

        return BedrockProvider(bedrock_runtime_client())
    if name in ("google", "bfl", "stability"):
        return _keyed_provider(name)
    from imagegen.providers.local import LocalProvider

    return LocalProvider()


# Google, Black Forest Labs and Stability AI: httpx with a key of their own, one constructor for all three.
KEYED_PROVIDER_CLASSES = {
    "google": ("imagegen.providers.google", "GoogleProvider"),
    "bfl": ("imagegen.providers.bfl", "BflProvider"),
    "stability": ("imagegen.providers.stability", "StabilityProvider"),
}


def _keyed_provider(name: ProviderName) -> ImageProvider:
    from importlib import import_module

    from imagegen.clients import http_client, keyed_provider_api_key
    from imagegen.settings import get_settings

    module, class_name = KEYED_PROVIDER_CLASSES[name]
    settings = get_settings()
    provider: ImageProvider = getattr(import_module(module), class_name)(
        http_client(),
        base_url=str(getattr(settings, f"{name}_base_url")),
        api_key=keyed_provider_api_key(name),
        max_retries=settings.provider_max_retries,
    )
    return provider
