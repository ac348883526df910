"""Backburner: background processing for LLM agent servers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("backburner")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

from backburner.settings import Settings
from backburner.settings_loader import LoadedSettings, SettingsError, load_settings

__all__ = ["LoadedSettings", "Settings", "SettingsError", "__version__", "load_settings"]
