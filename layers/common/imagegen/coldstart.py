"""No garbage collection while a function's modules load; imported first by the API function (functions/api/app.py).

Importing pydantic, Powertools, httpx, boto3 and the core allocates some hundred thousand objects and frees almost
none, yet each allocation burst triggers collections that scan all of them again: tens of milliseconds of a cold
start's CPU (README Performance). Collection is off from this module's import until :func:`loaded`, which moves what
init built into the permanent generation (``gc.freeze``: it lives as long as the process, so no later collection
needs to scan it either) and turns collection back on.
"""

import gc

gc.disable()


def loaded() -> None:
    """The function's modules are loaded: freeze what they built and collect again from here on."""
    gc.freeze()
    gc.enable()
