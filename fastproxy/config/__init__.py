"""Configuration: one schema, a TOML file and flags, compiled into an immutable Config."""

from fastproxy.config.loader import ConfigError, load_config
from fastproxy.config.model import Config, Upstream

__all__ = ["Config", "ConfigError", "Upstream", "load_config"]
