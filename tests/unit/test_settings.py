"""Settings: Letta's names and defaults, the precedence of sources, profiles, validation, masking."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from backburner.settings import DEFAULT_TIMEOUT_MESSAGE, Settings
from backburner.settings_loader import MASK, SettingsError, load_settings

LETTA_DEFAULTS = {
    "enable_batch_job_polling": False,
    "poll_running_llm_batches_interval_seconds": 300,
    "poll_lock_retry_interval_seconds": 480,
    "batch_job_polling_lookback_weeks": 2,
    "batch_job_polling_batch_size": None,
    "event_loop_threadpool_max_workers": 43,
    "file_processing_timeout_minutes": 30,
    "file_processing_timeout_error_message": "File processing timed out after {} minutes. Please try again.",
    "db_pool_size": 25,
    "db_max_overflow": 10,
    "db_pool_timeout": 30,
}

LETTA_YAML = """\
background_processing:
  enable_batch_job_polling: true
  poll_running_llm_batches_interval_seconds: 300
  poll_lock_retry_interval_seconds: 480
  batch_job_polling_lookback_weeks: 2
  batch_job_polling_batch_size: 50
  event_loop_threadpool_max_workers: 43
  file_processing_timeout_minutes: 30
  file_processing_timeout_error_message: "File processing timed out after {} minutes. Please try again."
  db_pool_size: 25
  db_max_overflow: 10
  db_pool_timeout: 30
"""


def load(**kwargs):  # type: ignore[no-untyped-def]
    kwargs.setdefault("environ", {})
    return load_settings(**kwargs)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backburner.yaml"
    path.write_text(text)
    return path


def test_every_letta_default_is_kept() -> None:
    loaded = load()
    for name, default in LETTA_DEFAULTS.items():
        assert getattr(loaded.settings, name) == default, name
        assert loaded.sources.get(name, "default") == "default"


def test_foundation_defaults() -> None:
    settings = load().settings
    assert settings.port == 8283
    assert settings.data_dir == Path(".backburner")
    assert settings.database_url is None
    assert settings.effective_database_url == "sqlite+aiosqlite:///.backburner/backburner.db"
    assert settings.file_processing_timeout_error_message == DEFAULT_TIMEOUT_MESSAGE


def test_letta_yaml_example_loads_as_written(tmp_path: Path) -> None:
    loaded = load(config_path=write(tmp_path, LETTA_YAML))
    assert loaded.settings.enable_batch_job_polling is True
    assert loaded.settings.batch_job_polling_batch_size == 50
    assert loaded.sources["batch_job_polling_batch_size"] == f"file {tmp_path / 'backburner.yaml'}"
    for name, default in LETTA_DEFAULTS.items():
        if name not in ("enable_batch_job_polling", "batch_job_polling_batch_size"):
            assert getattr(loaded.settings, name) == default


def test_nested_sections_and_top_level_names_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "watchdog:\n  watchdog_stall_threshold_seconds: 0.5\nport: 9000\n")
    settings = load(config_path=path).settings
    assert settings.watchdog_stall_threshold_seconds == 0.5
    assert settings.port == 9000


@pytest.mark.parametrize("profile", ["development", "production"])
def test_profiles(profile: str) -> None:
    expected = {
        "development": (60, 10, 10),
        "production": (300, 30, 43),
    }[profile]
    loaded = load(profile=profile)
    s = loaded.settings
    got = (
        s.poll_running_llm_batches_interval_seconds,
        s.file_processing_timeout_minutes,
        s.event_loop_threadpool_max_workers,
    )
    assert got == expected
    assert s.enable_batch_job_polling is True
    assert loaded.sources["file_processing_timeout_minutes"] == f"profile {profile}"


def test_profile_from_environment() -> None:
    loaded = load(environ={"BACKBURNER_PROFILE": "development"})
    assert loaded.settings.file_processing_timeout_minutes == 10


def test_each_source_overrides_the_one_below(tmp_path: Path) -> None:
    name = "file_processing_timeout_minutes"
    env_name = "BACKBURNER_FILE_PROCESSING_TIMEOUT_MINUTES"
    path = write(tmp_path, f"background_processing:\n  {name}: 21\n")
    # profile over default
    assert load(profile="development").settings.file_processing_timeout_minutes == 10
    # file over profile
    loaded = load(profile="development", config_path=path)
    assert (loaded.settings.file_processing_timeout_minutes, loaded.sources[name]) == (21, f"file {path}")
    # environment over file
    loaded = load(profile="development", config_path=path, environ={env_name: "22"})
    assert (loaded.settings.file_processing_timeout_minutes, loaded.sources[name]) == (22, f"env {env_name}")
    # flag over environment
    loaded = load(profile="development", config_path=path, environ={env_name: "22"}, flags={name: 23})
    assert (loaded.settings.file_processing_timeout_minutes, loaded.sources[name]) == (
        23,
        f"flag --{name.replace('_', '-')}",
    )


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9100\n")
    assert load(environ={"BACKBURNER_CONFIG": str(path)}).settings.port == 9100


def test_environment_none_for_optional_setting() -> None:
    loaded = load(environ={"BACKBURNER_BATCH_JOB_POLLING_BATCH_SIZE": "none"})
    assert loaded.settings.batch_job_polling_batch_size is None


def test_nested_environment_spelling() -> None:
    loaded = load(environ={"BACKBURNER_WATCHDOG__WATCHDOG_ENABLED": "false"})
    assert loaded.settings.watchdog_enabled is False


def test_unknown_file_key_gets_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "background_processing:\n  poll_running_llm_batch_interval_seconds: 5\n")
    with pytest.raises(SettingsError) as info:
        load(config_path=path)
    assert "poll_running_llm_batch_interval_seconds" in str(info.value)
    assert "did you mean 'poll_running_llm_batches_interval_seconds'" in str(info.value)


def test_unknown_environment_variable_gets_a_suggestion() -> None:
    with pytest.raises(SettingsError) as info:
        load(environ={"BACKBURNER_DB_POOL_SIZES": "3"})
    assert "did you mean 'BACKBURNER_DB_POOL_SIZE'" in str(info.value)


def test_secrets_are_masked() -> None:
    loaded = load(
        environ={
            "BACKBURNER_DATABASE_URL": "postgresql://app:hunter2@db.example:5432/agents",
            "BACKBURNER_ANTHROPIC_API_KEY": "sk-ant-secret-value",
            "BACKBURNER_REDIS_URL": "redis://:redispass@127.0.0.1:6379/0",
        }
    )
    shown = json.dumps(loaded.describe())
    for secret in ("hunter2", "sk-ant-secret-value", "redispass"):
        assert secret not in shown
    described = loaded.describe()
    assert described["database_url"]["value"] == f"postgresql://app:{MASK}@db.example:5432/agents"
    assert described["anthropic_api_key"]["value"] == MASK
    assert isinstance(loaded.settings.anthropic_api_key, SecretStr)
    assert "sk-ant-secret-value" not in repr(loaded.settings)


def test_secret_is_masked_in_error_messages() -> None:
    with pytest.raises(SettingsError) as info:
        load(environ={"BACKBURNER_DATABASE_URL": "mysql://app:hunter2@db/x"})
    assert "hunter2" not in str(info.value)
    assert "mysql" in str(info.value)


def test_settings_reject_unknown_fields_directly() -> None:
    with pytest.raises(ValueError, match="extra"):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


# Each bad configuration: (environment, YAML text or None, flag args, words the message must hold).
BAD_CONFIGURATIONS = {
    "negative interval": (
        {"BACKBURNER_POLL_RUNNING_LLM_BATCHES_INTERVAL_SECONDS": "-5"},
        None,
        [],
        [
            "poll_running_llm_batches_interval_seconds",
            "-5",
            "env BACKBURNER_POLL_RUNNING_LLM_BATCHES_INTERVAL_SECONDS",
            "greater than 0",
        ],
    ),
    "zero timeout": (
        {},
        "background_processing:\n  file_processing_timeout_minutes: 0\n",
        [],
        ["file_processing_timeout_minutes", "0", "file ", "greater than 0"],
    ),
    "lookback below a week": (
        {"BACKBURNER_BATCH_JOB_POLLING_LOOKBACK_WEEKS": "0"},
        None,
        [],
        ["batch_job_polling_lookback_weeks", "greater than or equal to 1"],
    ),
    "message without placeholder": (
        {"BACKBURNER_FILE_PROCESSING_TIMEOUT_ERROR_MESSAGE": "timed out"},
        None,
        [],
        ["file_processing_timeout_error_message", "timed out", "exactly one `{}`"],
    ),
    "message with two placeholders": (
        {},
        "background_processing:\n  file_processing_timeout_error_message: '{} {}'\n",
        [],
        ["file_processing_timeout_error_message", "exactly one"],
    ),
    "broken template": (
        {"BACKBURNER_FILE_PROCESSING_TIMEOUT_ERROR_MESSAGE": "after { minutes"},
        None,
        [],
        ["file_processing_timeout_error_message", "not a valid template"],
    ),
    "pool size zero": ({"BACKBURNER_DB_POOL_SIZE": "0"}, None, [], ["db_pool_size", "'0'", "greater than 0"]),
    "negative overflow": ({}, "database:\n  db_max_overflow: -1\n", [], ["db_max_overflow", "-1"]),
    "unsupported driver": (
        {"BACKBURNER_DATABASE_URL": "mysql://root@localhost/x"},
        None,
        [],
        ["database_url", "mysql", "not supported"],
    ),
    "unparseable url": (
        {"BACKBURNER_DATABASE_URL": "not a url"},
        None,
        [],
        ["database_url", "not a parseable database URL"],
    ),
    "not a number": (
        {"BACKBURNER_DB_POOL_TIMEOUT": "soon"},
        None,
        [],
        ["db_pool_timeout", "soon", "integer"],
    ),
    "bad flag": (
        {},
        None,
        ["--port", "70000"],
        ["port", "70000", "flag --port", "less than or equal to 65535"],
    ),
    "unknown profile": (
        {"BACKBURNER_PROFILE": "staging"},
        None,
        [],
        ["staging", "env BACKBURNER_PROFILE", "development, production"],
    ),
    "unknown key": (
        {},
        "background_processing:\n  enable_batch_polling: true\n",
        [],
        ["enable_batch_polling", "did you mean 'enable_batch_job_polling'"],
    ),
    "unknown env": (
        {"BACKBURNER_EVENT_LOOP_THREADPOOL_WORKERS": "3"},
        None,
        [],
        ["BACKBURNER_EVENT_LOOP_THREADPOOL_WORKERS", "did you mean"],
    ),
    "bad election mode": (
        {"BACKBURNER_LEADER_ELECTION_MODE": "race"},
        None,
        [],
        ["leader_election_mode", "race", "'wait' or 'poll'"],
    ),
    "invalid yaml": ({}, "background_processing: [unclosed\n", [], ["not valid YAML"]),
    "missing config file": (
        {"BACKBURNER_CONFIG": "/nonexistent/backburner.yaml"},
        None,
        [],
        ["/nonexistent/backburner.yaml", "does not exist"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGURATIONS), ids=list(BAD_CONFIGURATIONS))
def test_bad_configuration_exits_2_naming_setting_value_and_source(case: str, tmp_path: Path) -> None:
    env, yaml_text, flags, words = BAD_CONFIGURATIONS[case]
    args = [sys.executable, "-m", "backburner", "config", "validate", *flags]
    if yaml_text is not None:
        args += ["--config", str(write(tmp_path, yaml_text))]
    if flags:  # flags other than --config belong to serve; validate the same way serve would
        args = [sys.executable, "-m", "backburner", "serve", *flags]
    result = subprocess.run(
        args, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in result.stderr, (word, result.stderr)


def test_config_validate_accepts_good_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "backburner",
            "config",
            "validate",
            "--config",
            str(write(tmp_path, LETTA_YAML)),
        ],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_config_show_json_masks_secrets(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backburner", "config", "show", "--json", "--profile", "production"],
        env={
            "PATH": "/usr/bin:/bin",
            "BACKBURNER_OPENAI_API_KEY": "sk-very-secret",
            "BACKBURNER_DATABASE_URL": "postgresql://u:pw123@h/db",
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "sk-very-secret" not in result.stdout and "pw123" not in result.stdout
    document = json.loads(result.stdout)
    entry = document["settings"]["openai_api_key"]
    assert entry == {"value": MASK, "source": "env BACKBURNER_OPENAI_API_KEY"}
    assert document["settings"]["poll_running_llm_batches_interval_seconds"] == {
        "value": 300,
        "source": "profile production",
    }
    assert document["settings"]["port"] == {"value": 8283, "source": "default"}


def test_config_show_table_lists_sources(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backburner", "config", "show"],
        env={"PATH": "/usr/bin:/bin", "BACKBURNER_PORT": "9001", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    # Not a terminal: tab-separated columns, a header first.
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["setting", "value", "source"]
    assert ["port", "9001", "env BACKBURNER_PORT"] in rows


def test_webhook_urls_are_masked_beyond_their_host() -> None:
    loaded = load(
        environ={
            "BACKBURNER_BATCH_COMPLETION_WEBHOOK_URL": "https://hooks.example.com/services/T000/B000/tok3n",
            "BACKBURNER_WATCHDOG_ALERT_WEBHOOK_URL": "https://alerts.example.com/hook?token=s3cret",
        }
    )
    shown = json.dumps(loaded.describe())
    assert "tok3n" not in shown and "s3cret" not in shown
    assert loaded.describe()["batch_completion_webhook_url"]["value"] == f"https://hooks.example.com/{MASK}"
