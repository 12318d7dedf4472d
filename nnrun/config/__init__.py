"""Config loading, composition, overrides and validation (no TensorFlow here)."""

from nnrun.config.loader import apply_overrides, load_config, load_raw
from nnrun.config.resolve import config_hash, resolve, to_yaml
from nnrun.config.schema import RunConfig

__all__ = ["RunConfig", "apply_overrides", "config_hash", "load_config", "load_raw", "resolve", "to_yaml"]
