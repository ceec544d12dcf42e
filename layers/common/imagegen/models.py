"""The base of every pydantic model here: validators and serializers are built on first use, not at import.

A cold start imports every model the function could need (edits, jobs, streaming events, model cards, usage reports)
but a request uses a few of them; building all of them at import was about a third of the API function's own import
CPU (README Performance). ``defer_build`` builds a model's schema the first time it validates or serializes, with the
same result: the models used by every request are built by the first one, the others only if a request needs them.
"""

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(defer_build=True)
