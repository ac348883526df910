"""Build `Settings` from its layers, remembering the source of every value.

Layers, lowest to highest: defaults < profile < YAML file < environment < command-line flags.
Any problem (an unknown key, a bad value) becomes one `SettingsError` that names the setting,
the value, where it came from and what is allowed.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import SecretStr, ValidationError

from backburner.settings import SECTIONS, Settings, field_section, is_secret_field

ENV_PREFIX = "BACKBURNER_"
PROFILE_ENV = ENV_PREFIX + "PROFILE"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
# Environment variables that choose sources rather than set a value.
# Read by the client commands (`--url`, `--api-key`), not settings: a shell that exports them
# for the client can still start a server.
CLIENT_ENV = {"BACKBURNER_URL", "BACKBURNER_API_KEY"}
LOADER_ENV = {PROFILE_ENV, CONFIG_ENV, *CLIENT_ENV}
# Letta's documentation puts its flat names under this key; every setting is accepted there too.
LETTA_SECTION = "background_processing"
# In this section a mapping under a name that is no setting defines a named batch provider.
NAMED_PROVIDERS = "providers"
MASK = "********"

PROFILES: dict[str, dict[str, Any]] = {
    "development": {
        "enable_batch_job_polling": True,
        "poll_running_llm_batches_interval_seconds": 60,
        "file_processing_timeout_minutes": 10,
        "event_loop_threadpool_max_workers": 10,
    },
    "production": {
        "enable_batch_job_polling": True,
        "poll_running_llm_batches_interval_seconds": 300,
        "file_processing_timeout_minutes": 30,
        "event_loop_threadpool_max_workers": 43,
    },
}

DEFAULT_SOURCE = "default"


class SettingsError(Exception):
    """Configuration that cannot be used; `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: dict[str, str]
    profile: str | None = None
    config_path: Path | None = None

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every effective setting with its source, secrets masked, JSON-ready."""
        dumped = self.settings.model_dump(mode="json")
        return {
            name: {
                "value": masked_value(name, getattr(self.settings, name), dumped[name]),
                "source": self.sources.get(name, DEFAULT_SOURCE),
            }
            for name in Settings.model_fields
        }


@dataclass
class _Layers:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def put(self, name: str, value: Any, source: str) -> None:
        self.values[name] = value
        self.sources[name] = source


def load_settings(
    *,
    flags: Mapping[str, Any] | None = None,
    config_path: Path | str | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Load settings from every layer. `flags` holds command-line values keyed by setting name."""
    environ = os.environ if environ is None else environ
    layers = _Layers()

    profile_name, profile_source = (
        (profile, "flag --profile") if profile else (environ.get(PROFILE_ENV) or None, f"env {PROFILE_ENV}")
    )
    if profile_name:
        if profile_name not in PROFILES:
            layers.problems.append(
                f"profile {profile_name!r} (from {profile_source}) is unknown; allowed: {', '.join(PROFILES)}"
                + _suggestion(profile_name, PROFILES)
            )
        else:
            for name, value in PROFILES[profile_name].items():
                layers.put(name, value, f"profile {profile_name}")

    path_value, path_source = (
        (str(config_path), "flag --config")
        if config_path
        else (environ.get(CONFIG_ENV) or None, f"env {CONFIG_ENV}")
    )
    path = Path(path_value) if path_value else None
    if path is not None:
        _read_yaml(path, path_source, layers)

    _read_environment(environ, layers)

    for name, value in (flags or {}).items():
        if value is not None:
            layers.put(name, value, f"flag --{name.replace('_', '-')}")

    try:
        settings = Settings(**layers.values)
    except ValidationError as exc:
        raise SettingsError(layers.problems + _explain(exc, layers)) from None
    if layers.problems:
        raise SettingsError(layers.problems)
    return LoadedSettings(settings, layers.sources, profile_name if profile_name in PROFILES else None, path)


def _read_yaml(path: Path, source: str, layers: _Layers) -> None:
    where = f"file {path}"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        layers.problems.append(f"config file {path} (from {source}) does not exist")
        return
    except (OSError, UnicodeDecodeError) as exc:
        layers.problems.append(f"config file {path} (from {source}) cannot be read: {exc}")
        return
    except yaml.YAMLError as exc:
        layers.problems.append(f"config file {path} is not valid YAML: {_one_line(str(exc))}")
        return
    if document is None:
        return
    if not isinstance(document, dict):
        layers.problems.append(
            f"config file {path} must hold a mapping of settings, not {type(document).__name__}"
        )
        return
    for key, value in document.items():
        key = str(key)
        if key in SECTIONS and isinstance(value, dict):
            named: dict[str, Any] = {}
            for name, inner in value.items():
                if (
                    key == NAMED_PROVIDERS
                    and str(name) not in Settings.model_fields
                    and isinstance(inner, dict)
                ):
                    named[str(name)] = inner  # `providers: {groq: {kind: openai, ...}}`
                else:
                    _put_from_file(str(name), inner, key, where, layers)
            if named:
                layers.put(NAMED_PROVIDERS, {**layers.values.get(NAMED_PROVIDERS, {}), **named}, where)
        elif key in Settings.model_fields:
            layers.put(key, value, where)
        else:
            known = [*SECTIONS, *Settings.model_fields]
            layers.problems.append(f"unknown key {key!r} in {where}{_suggestion(key, known)}")


def _put_from_file(name: str, value: Any, section: str, where: str, layers: _Layers) -> None:
    if name not in Settings.model_fields:
        layers.problems.append(
            f"unknown setting {section}.{name} in {where}{_suggestion(name, Settings.model_fields)}"
        )
    elif section not in (LETTA_SECTION, field_section(name)):
        layers.problems.append(
            f"setting {name} in {where} belongs in section {field_section(name)!r}, not {section!r}"
        )
    else:
        layers.put(name, value, where)


def _read_environment(environ: Mapping[str, str], layers: _Layers) -> None:
    env_names = {ENV_PREFIX + name.upper(): name for name in Settings.model_fields}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in LOADER_ENV:
            continue
        name = env_names.get(_flatten_nested_env(var))
        if name is None:
            layers.problems.append(
                f"unknown environment variable {var}{_suggestion(var, [*env_names, *LOADER_ENV])}"
            )
            continue
        raw = environ[var]
        value: Any = None if _means_none(name, raw) else raw
        layers.put(name, value, f"env {var}")


def _flatten_nested_env(var: str) -> str:
    """`BACKBURNER_WATCHDOG__ENABLED` is the nested spelling of `BACKBURNER_WATCHDOG_ENABLED`."""
    if "__" not in var:
        return var
    section, _, name = var[len(ENV_PREFIX) :].partition("__")
    candidate = name.lower()
    if candidate in Settings.model_fields and section.lower() in (field_section(candidate), LETTA_SECTION):
        return ENV_PREFIX + name
    return var


def _means_none(name: str, raw: str) -> bool:
    info = Settings.model_fields[name]
    optional = not info.is_required() and info.default is None
    return (
        optional
        and raw.strip().lower() in ("", "none", "null")
        and raw not in _literal_values(info.annotation)
    )


def _literal_values(annotation: Any) -> set[Any]:
    """Every value of the `Literal[...]`s inside an annotation (`"none"` may be a real choice)."""
    if get_origin(annotation) is Literal:
        return set(get_args(annotation))
    return {value for arg in get_args(annotation) for value in _literal_values(arg)}


def _explain(exc: ValidationError, layers: _Layers) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = _allowed(error["msg"])
        if loc and loc[0] in Settings.model_fields:
            name = loc[0]
            shown = _shown_value(name, layers.values.get(name, error.get("input")))
            source = layers.sources.get(name, DEFAULT_SOURCE)
            problems.append(f"setting {name} = {shown} (from {source}): {message}")
        else:
            involved = [n for n in Settings.model_fields if n in message]
            origin = ", ".join(
                f"{n} = {_shown_value(n, layers.values.get(n))} from {layers.sources.get(n, DEFAULT_SOURCE)}"
                for n in involved
                if n in layers.values
            )
            problems.append(f"settings conflict: {message}" + (f" ({origin})" if origin else ""))
    return problems


def _allowed(pydantic_message: str) -> str:
    message = pydantic_message.removeprefix("Value error, ")
    if message.startswith("Input should be "):
        return "must be " + message.removeprefix("Input should be ")
    return message


def _shown_value(name: str, value: Any) -> str:
    if is_secret_field(name) and value is not None:
        return repr(mask_url(str(value))) if "://" in str(value) else MASK
    return repr(value)


def masked_value(name: str, value: Any, dumped: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return MASK
    if is_secret_field(name) or (isinstance(dumped, str) and "://" in dumped):
        if "://" not in str(dumped):
            return MASK
        # A webhook URL often carries its token in the path (Slack-style): keep only the host.
        return mask_url(str(dumped), hide_path=name.endswith("webhook_url"))
    return dumped


def mask_url(url: str, *, hide_path: bool = False) -> str:
    """Hide the password of a URL (and its path and query when asked), keeping the rest readable."""
    parts = urlsplit(url)
    if hide_path and (parts.path.strip("/") or parts.query):
        parts = parts._replace(path="/" + MASK, query="", fragment="")
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    return urlunsplit(parts)


def _suggestion(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())
