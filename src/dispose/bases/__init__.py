"""The base animation models DisPose plugs into, one package each (``dispose.bases.<name>``: its registry
entry in ``__init__``, ``pipeline``, ``weights`` (layout and loading), ``training`` (training model), ``loss``
and ``tiny`` (tiny random weights)), and the registry (:mod:`dispose.bases.registry`) that holds their
entries."""

from dispose.bases.mimicmotion import MIMICMOTION
from dispose.bases.musepose import MUSEPOSE
from dispose.bases.registry import (
    BASE_SETTINGS,
    BASES,
    DEFAULT_BASE,
    Base,
    SamplingRequest,
    defaults_text,
    get_base,
    register,
    required_components,
    training_base,
)

register(MIMICMOTION)
register(MUSEPOSE)

__all__ = [
    "BASES",
    "BASE_SETTINGS",
    "DEFAULT_BASE",
    "Base",
    "SamplingRequest",
    "defaults_text",
    "get_base",
    "register",
    "required_components",
    "training_base",
]
