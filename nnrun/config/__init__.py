"""Config loading, composition, overrides and validation (no TensorFlow here)."""

from nnrun.config.canonical import config_hash, flatten, identity, to_yaml
from nnrun.config.loader import apply_overrides, load_config, load_raw, set_value
from nnrun.config.resolve import resolve
from nnrun.config.schema import RunConfig

__all__ = ["RunConfig", "apply_overrides", "config_hash", "flatten", "identity", "load_config", "load_raw", "resolve",
           "set_value", "to_yaml"]
