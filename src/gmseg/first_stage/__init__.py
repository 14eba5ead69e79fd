"""The frozen first stage (being split into one module per adapter; see wrapper.py)."""

from .wrapper import (
    DEFAULT_VAE,
    TAESD_HUB_ID,
    FirstStage,
    FirstStageSource,
    identify_source,
    load_first_stage,
    load_state_dict_safely,
)

__all__ = [
    "DEFAULT_VAE",
    "TAESD_HUB_ID",
    "FirstStage",
    "FirstStageSource",
    "identify_source",
    "load_first_stage",
    "load_state_dict_safely",
]
