"""Deprecated name of :mod:`imagegen.model_list` (the ``GET /v1/models`` view), kept until functions/api/app.py
imports ``imagegen.model_list``; the model data lives in ``imagegen/catalog/*.json``, read by :mod:`imagegen.specs`."""

from imagegen.model_list import ModelList, list_models

__all__ = ["ModelList", "list_models"]
