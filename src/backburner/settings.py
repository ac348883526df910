"""Settings: one object, built at the edge from defaults < profile < YAML file < environment < flags.

Every value remembers where it came from, so that a bad value can be reported with its source and
`backburner config show` can say why each setting has the value it has.
"""

from __future__ import annotations

import ipaddress
import json
import re
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from backburner.schedules.allowlist import url_prefix_problem

DEFAULT_TIMEOUT_MESSAGE = "File processing timed out after {} minutes. Please try again."

HANDLER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
SUPPORTED_DATABASE_DRIVERS = ("sqlite", "sqlite+aiosqlite", "postgresql", "postgresql+asyncpg", "postgres")
MB = 1024 * 1024
DEFAULT_PROVIDER_NAMES = ("anthropic", "openai")
PROVIDER_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,19}")


class NamedProvider(BaseModel):
    """One entry of `providers:`: a batch API of kind `anthropic` or `openai` at its own address.

    The limits default to the kind's (`anthropic_batch_max_*` or `openai_batch_max_*`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["anthropic", "openai"]
    base_url: AnyHttpUrl
    api_key: SecretStr
    max_requests: int | None = Field(None, gt=0)
    max_bytes: int | None = Field(None, gt=0)
    enqueued_token_limits: dict[str, int] = Field(default_factory=dict)


class ModelPrice(BaseModel):
    """List prices of one model in US dollars per million tokens (before the batch discount)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float = Field(0.0, ge=0)
    cache_write: float = Field(0.0, ge=0)


def _section(name: str, *, secret: bool = False) -> dict[str, Any]:
    return {"section": name, "secret": secret}


def _field(default: Any, section: str, description: str, *, secret: bool = False, **kw: Any) -> Any:
    return Field(default, description=description, json_schema_extra=_section(section, secret=secret), **kw)


class Settings(BaseSettings):
    """The effective configuration of one Backburner process.

    Built by `backburner.settings_loader.load_settings`, never at import time. Field names are the
    operator-facing names (the Letta names are kept as they are), with units in the names.
    """

    model_config = SettingsConfigDict(extra="forbid", validate_default=True, frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The layered loader reads every source itself so that it can record provenance;
        # the model only validates what it is given.
        return (init_settings,)

    # --- server -------------------------------------------------------------------------------
    host: str = _field("127.0.0.1", "server", "Address the API listens on.")
    port: int = _field(8283, "server", "Port the API listens on.", ge=1, le=65535)
    data_dir: Path = _field(
        Path(".backburner"),
        "server",
        "Directory for the SQLite database, `local` blobs and temporary copies.",
    )
    shutdown_timeout_seconds: float = _field(
        10.0, "server", "Upper bound on a graceful shutdown before remaining work is abandoned.", gt=0
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = _field(
        "INFO", "server", "Minimum level of log records."
    )
    log_format: Literal["text", "json"] = _field(
        "text", "server", "`text` for people, `json` for log shippers."
    )

    # --- database -----------------------------------------------------------------------------
    database_url: str | None = _field(
        None,
        "database",
        "SQLAlchemy URL; default is a SQLite file `backburner.db` in `data_dir`.",
        secret=True,
    )
    db_pool_size: int = _field(25, "database", "Connections kept in the PostgreSQL pool.", gt=0, le=1000)
    db_max_overflow: int = _field(10, "database", "Extra connections beyond the pool size.", ge=0, le=1000)
    db_pool_timeout: int = _field(30, "database", "Seconds to wait for a pooled connection.", gt=0)

    # --- background processing (Letta's names and defaults) -----------------------------------
    enable_batch_job_polling: bool = _field(False, "background_processing", "Run the LLM batch poller.")
    poll_running_llm_batches_interval_seconds: int = _field(
        300, "background_processing", "Seconds between poll cycles over running LLM batches.", gt=0
    )
    poll_lock_retry_interval_seconds: int = _field(
        480,
        "background_processing",
        "Follower lock retry interval in `poll` election mode; also caps the reconnect backoff.",
        gt=0,
    )
    batch_job_polling_lookback_weeks: int = _field(
        2, "background_processing", "Only batches created within this many weeks are polled.", ge=1
    )
    batch_job_polling_batch_size: int | None = _field(
        None, "background_processing", "Most batches polled per cycle (none: all).", gt=0
    )
    event_loop_threadpool_max_workers: int = _field(
        43, "background_processing", "Threads in the event loop's default executor.", gt=0, le=1024
    )
    file_processing_timeout_minutes: int = _field(
        30, "background_processing", "A file not finished this long after upload ends in ERROR.", gt=0
    )
    file_processing_timeout_error_message: str = _field(
        DEFAULT_TIMEOUT_MESSAGE,
        "background_processing",
        "Error message of a timed-out file; `{}` is replaced by the minutes.",
    )

    # --- leader election and scheduler --------------------------------------------------------
    leader_lease_seconds: float = _field(
        10.0, "leader", "Seconds a silent leader keeps the lock before the server frees it.", ge=2, le=3600
    )
    leader_election_mode: Literal["wait", "poll"] = _field(
        "wait", "leader", "`wait`: followers block on the lock; `poll`: retry every poll interval."
    )
    leader_database_url: str | None = _field(
        None, "leader", "Separate PostgreSQL URL for the lock connection (bypass a pooler).", secret=True
    )
    leader_election_name: str = _field(
        "backburner-scheduler",
        "leader",
        "Name of the election; instances with the same name compete.",
        min_length=1,
        max_length=200,
    )
    scheduler_heartbeat_interval_seconds: float = _field(
        5.0, "scheduler", "Interval of the `heartbeat` housekeeping job.", gt=0
    )
    statistics_interval_seconds: float = _field(
        30.0,
        "scheduler",
        "Interval of the `statistics` job (PostgreSQL): ANALYZE of the tables that changed enough"
        " since their last one, as autovacuum would, for when it is off or behind.",
        gt=0,
    )
    instance_heartbeat_interval_seconds: float = _field(
        2.0, "scheduler", "Interval at which each instance records that it is alive.", gt=0
    )
    instance_expiry_seconds: float = _field(
        60.0, "scheduler", "An instance silent this long is considered dead and its row removed.", gt=0
    )

    # --- LLM batches --------------------------------------------------------------------------
    anthropic_api_key: SecretStr | None = _field(None, "providers", "Anthropic API key.", secret=True)
    anthropic_base_url: AnyHttpUrl = _field(
        AnyHttpUrl("https://api.anthropic.com"), "providers", "Anthropic API base URL."
    )
    openai_api_key: SecretStr | None = _field(None, "providers", "OpenAI API key.", secret=True)
    openai_base_url: AnyHttpUrl = _field(
        AnyHttpUrl("https://api.openai.com/v1"), "providers", "OpenAI API base URL."
    )
    provider_timeout_seconds: float = _field(60.0, "providers", "Timeout of one provider request.", gt=0)
    providers: dict[str, NamedProvider] = _field(
        {},
        "providers",
        "More batch APIs by name, each with `kind` (`anthropic` or `openai`), `base_url` and "
        "`api_key` (any OpenAI-compatible batch API); a submission names its provider.",
    )
    anthropic_batch_max_requests: int = _field(
        100_000, "providers", "Most requests in one Anthropic batch; larger submissions are split.", gt=0
    )
    anthropic_batch_max_bytes: int = _field(
        256 * MB, "providers", "Most bytes in one Anthropic batch; larger submissions are split.", gt=0
    )
    openai_batch_max_requests: int = _field(
        50_000, "providers", "Most requests in one OpenAI batch; larger submissions are split.", gt=0
    )
    openai_batch_max_bytes: int = _field(
        200 * MB,
        "providers",
        "Most bytes in one OpenAI batch input file; larger submissions are split.",
        gt=0,
    )
    openai_enqueued_token_limits: dict[str, int] = _field(
        {},
        "providers",
        "Enqueued-token budget per model, `{model: tokens}`: a submission that does not fit waits "
        "in `queued` until earlier batches end.",
    )
    batch_poll_concurrency: int = _field(
        16, "batches", "Provider requests in flight at once during a poll cycle.", gt=0, le=1000
    )
    batch_poll_jitter_seconds: float = _field(
        5.0, "batches", "Random delay added to each poll cycle so instances do not align.", ge=0
    )
    batch_poll_max_consecutive_errors: int = _field(
        10, "batches", "Consecutive poll failures after which a batch is failed with the reason.", gt=0
    )
    batch_results_chunk_size: int = _field(
        1000, "batches", "Item results upserted per transaction while streaming results.", gt=0, le=100_000
    )
    batch_missing_output_max_polls: int = _field(
        10, "batches", "Polls to wait for a completed OpenAI batch's output file before failing it.", gt=0
    )
    batch_completion_handler: str | None = _field(
        None, "batches", "`module:function` called with each completed batch (at least once)."
    )
    batch_completion_webhook_url: AnyHttpUrl | None = _field(
        None, "batches", "URL that receives an HMAC-signed POST for each completed batch.", secret=True
    )
    batch_completion_webhook_secret: SecretStr | None = _field(
        None, "batches", "Secret for the webhook's HMAC-SHA256 signature.", secret=True
    )
    batch_completion_max_attempts: int = _field(
        20, "batches", "Delivery attempts of a completion before it is marked failed.", gt=0
    )
    batch_prices: dict[str, ModelPrice] = _field(
        {},
        "batches",
        "List prices per model in US dollars per million tokens, "
        "`{model: {input, output, cache_read, cache_write}}`, for estimated costs.",
    )
    batch_price_discount: float = _field(
        0.5, "batches", "Fraction of the list price that batches pay (providers charge half).", ge=0, le=1
    )
    batch_delete_provider_files: bool = _field(
        True, "batches", "Delete a batch's files (and Anthropic results) at the provider once stored."
    )
    batch_retention_days: int | None = _field(
        None, "batches", "Stored results of batches ended this many days ago are removed (none: keep).", gt=0
    )
    batch_max_concurrent_submissions: int = _field(
        2, "batches", "Batch submission bodies read and checked at once per instance; others wait.", gt=0
    )

    # --- file processing ----------------------------------------------------------------------
    file_upload_max_bytes: int = _field(50 * 1024 * 1024, "files", "Largest accepted upload, in bytes.", gt=0)
    file_processing_workers: int = _field(
        4,
        "files",
        "Files one instance works on at once (0: this instance processes no files).",
        ge=0,
        le=256,
    )
    file_lease_seconds: float = _field(
        30.0, "files", "A claimed file whose worker stops heartbeating is reclaimed after this.", gt=0
    )
    file_stall_timeout_minutes: float = _field(
        5.0, "files", "A file with no progress for this long is reclaimed or failed.", gt=0
    )
    file_max_attempts: int = _field(3, "files", "Claims of one file before it is failed.", gt=0, le=100)
    file_sweep_interval_seconds: float = _field(60.0, "files", "Interval of the timeout sweeper job.", gt=0)
    file_poll_interval_seconds: float = _field(
        1.0, "files", "How often an idle file worker looks for new files (uploads here wake it).", gt=0
    )
    file_processing_processes: int | None = _field(
        None,
        "files",
        "Processes that parse and chunk files (and make `hash` vectors); unset: one per worker.",
        ge=1,
        le=256,
    )
    file_max_concurrent_per_org: int | None = _field(
        None,
        "files",
        "Files of one organization an instance works on at once; unset: one fewer than "
        "`file_processing_workers`, so that another organization always finds a worker.",
        ge=1,
        le=256,
    )
    file_parse_timeout_seconds: float = _field(
        120.0,
        "files",
        "Wall-clock and CPU time any file's parsing may take before the file ends in ERROR.",
        gt=0,
        le=86_400,
    )
    file_parse_seconds_per_mb: float = _field(
        20.0,
        "files",
        "Parsing time a file gets per MB of its size (at least 5 s, at most "
        "`file_parse_timeout_seconds`): a small file cannot take long.",
        gt=0,
    )
    file_max_pages: int = _field(2000, "files", "Most pages of a PDF that is processed.", ge=1)
    file_max_text_chars: int = _field(
        50_000_000, "files", "Most characters of text extracted from one file.", ge=1
    )
    file_process_memory_limit_mb: int = _field(
        1024,
        "files",
        "Memory a pool process may take for one file beyond what it holds at start, in MB.",
        ge=64,
        le=1_048_576,
    )
    chunk_size_chars: int = _field(1200, "files", "Target size of a chunk, in characters.", ge=50, le=100_000)
    chunk_overlap_chars: int = _field(150, "files", "Characters repeated between chunks.", ge=0)
    embedder: Literal["hash", "openai", "sentence-transformers"] = _field(
        "hash", "embeddings", "Embedding backend; `hash` needs no model and works offline."
    )
    embedding_model: str = _field("text-embedding-3-small", "embeddings", "Model name for `openai`.")
    embedding_model_path: Path | None = _field(
        None, "embeddings", "Local model directory for `sentence-transformers` (never downloaded)."
    )
    embedding_dimensions: int = _field(
        256, "embeddings", "Vector size of the `hash` embedder.", gt=0, le=8192
    )
    embedding_base_url: AnyHttpUrl = _field(
        AnyHttpUrl("https://api.openai.com/v1"), "embeddings", "OpenAI-compatible `/v1` base URL."
    )
    embedding_api_key: SecretStr | None = _field(
        None, "embeddings", "Key of the embeddings endpoint.", secret=True
    )
    embedding_batch_size: int = _field(128, "embeddings", "Texts per embeddings request.", gt=0, le=2048)
    reembed_passages_per_second: float | None = _field(
        None,
        "embeddings",
        "Most passages one instance re-embeds per second (unset: as fast as the embedder goes), "
        "so that a re-embedding leaves room for ingestion within the provider's rate limits.",
        gt=0,
    )
    redis_url: str | None = _field(
        None, "embeddings", "Redis URL for the embedding cache (process memory when unset).", secret=True
    )

    # --- blob storage -------------------------------------------------------------------------
    blob_store: Literal["local", "database", "s3"] | None = _field(
        None,
        "blobs",
        "Where uploaded files' contents live: `local` (under `data_dir`, one host unless shared), "
        "`database` (rows of 1 MB in the database) or `s3`. Unset: `database` on PostgreSQL, "
        "`local` on SQLite.",
    )
    blob_sweep_interval_seconds: float = _field(
        600.0,
        "blobs",
        "Interval of the leader's orphan sweeper, which removes blobs no file owns and uploads "
        "left by crashes once they are an hour old.",
        gt=0,
    )
    s3_bucket: str | None = _field(None, "blobs", "Bucket of the `s3` blob store.")
    s3_prefix: str = _field(
        "backburner",
        "blobs",
        "Key prefix of every object Backburner stores in the bucket (empty: the bucket's root).",
        max_length=200,
    )
    s3_endpoint_url: AnyHttpUrl | None = _field(
        None, "blobs", "S3 API endpoint of a server other than AWS (MinIO, Ceph, R2, GCS)."
    )
    s3_region: str = _field(
        "us-east-1", "blobs", "Region of the bucket (signs requests).", pattern=r"^[A-Za-z0-9-]{1,64}$"
    )
    s3_access_key_id: str | None = _field(
        None,
        "blobs",
        "Access key id for S3; unset: the standard AWS credential chain (environment, files, role).",
        min_length=1,
        max_length=256,
    )
    s3_secret_access_key: SecretStr | None = _field(None, "blobs", "Secret access key for S3.", secret=True)
    # --- user schedules -----------------------------------------------------------------------
    schedule_webhook_allowed_urls: tuple[str, ...] = _field(
        (),
        "schedules",
        "URL prefixes that webhook schedules may target (a JSON list, or comma-separated in the "
        "environment); empty: no webhook schedules.",
        max_length=100,
    )
    schedule_handlers: dict[str, str] = _field(
        {},
        "schedules",
        'Python callables that handler schedules may name: `{name: "module:function"}` (JSON, or '
        "comma-separated `name=module:function` in the environment).",
    )
    schedule_max_attempts: int = _field(
        5, "schedules", "Delivery attempts of one fire before its run is recorded as failed.", gt=0, le=100
    )
    schedule_retry_backoff_seconds: float = _field(
        1.0,
        "schedules",
        "Wait before the second attempt of a fire; it doubles each attempt (at most 5 min).",
        gt=0,
        le=300,
    )
    schedule_delivery_concurrency: int = _field(
        64, "schedules", "Deliveries of fires in flight at once on the leader.", gt=0, le=10_000
    )
    schedule_delivery_timeout_seconds: float = _field(
        10.0,
        "schedules",
        "Timeout of one delivery attempt (a webhook request or a handler call).",
        gt=0,
        le=600,
    )
    schedule_poll_interval_seconds: float = _field(
        1.0,
        "schedules",
        "Longest the leader waits before looking for due schedules again (it wakes at the next fire "
        "time, and at once for schedules changed on its own instance).",
        gt=0,
        le=60,
    )
    schedule_dispatch_batch_size: int = _field(
        500, "schedules", "Due schedules claimed per transaction by the leader.", gt=0, le=10_000
    )
    schedule_payload_max_bytes: int = _field(
        64 * 1024,
        "schedules",
        "Largest `payload` of a schedule, as JSON, in bytes.",
        gt=0,
        le=16 * 1024 * 1024,
    )
    schedule_run_retention_days: float = _field(
        7.0, "schedules", "Finished runs older than this are deleted by the leader.", gt=0
    )

    # --- watchdog -----------------------------------------------------------------------------
    watchdog_enabled: bool = _field(True, "watchdog", "Watch the event loop for stalls and hangs.")
    watchdog_check_interval_seconds: float = _field(
        5.0, "watchdog", "Interval of the hang check (Letta's name).", gt=0
    )
    watchdog_timeout_threshold_seconds: float = _field(
        15.0, "watchdog", "A loop blocked this long is hung: CRITICAL log, readiness degraded.", gt=0
    )
    watchdog_stall_threshold_seconds: float = _field(
        0.25, "watchdog", "A loop blocked this long is stalled: reported with its culprit.", gt=0
    )
    watchdog_recovery_seconds: float = _field(
        30.0, "watchdog", "Healthy time after a hang before readiness recovers.", ge=0
    )
    watchdog_alert_after_hangs: int = _field(
        3, "watchdog", "Consecutive hangs before an alert is sent to the webhook.", gt=0
    )
    watchdog_alert_webhook_url: AnyHttpUrl | None = _field(
        None, "watchdog", "URL that receives a JSON alert after repeated hangs.", secret=True
    )

    # --- access -------------------------------------------------------------------------------
    auth_mode: Literal["keys", "none"] | None = _field(
        None,
        "auth",
        "`keys`: every API route needs a key; `none`: open, allowed on a loopback host only. "
        "Unset: `none` on a loopback host, `keys` otherwise.",
    )
    metrics_require_auth: bool = _field(False, "auth", "Require a key for `/metrics`.")
    api_max_body_bytes: int = _field(
        1024 * 1024, "auth", "Largest request body of a JSON route, in bytes.", gt=0
    )
    batch_max_body_bytes: int | None = _field(
        None,
        "auth",
        "Largest body of a batch submission, in bytes; unset: the largest provider batch "
        "(`anthropic_batch_max_bytes`, `openai_batch_max_bytes`, named providers).",
        gt=0,
    )
    submissions_per_minute: int = _field(
        600, "auth", "Batch submissions, uploads and retries one key may make per minute.", gt=0
    )
    api_max_page_size: int = _field(500, "auth", "Largest `limit` a listing accepts.", gt=0, le=10_000)
    cors_allowed_origins: tuple[str, ...] = _field(
        (),
        "auth",
        "Origins (`https://host[:port]`, comma-separated) whose web pages may call the API; empty: CORS off.",
        max_length=100,
    )
    searches_per_minute: int = _field(120, "auth", "Searches one key may make per minute.", gt=0)
    search_max_concurrent: int = _field(
        4,
        "auth",
        "Searches one instance runs at once (one organization: all but one); more wait up to 10 s, "
        "then get 503.",
        gt=0,
        le=1000,
    )

    @field_validator("file_processing_timeout_error_message")
    @classmethod
    def _one_placeholder(cls, value: str) -> str:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc})") from None
        if fields != [""]:
            raise ValueError("must be a template with exactly one `{}` (for the minutes)")
        return value

    @field_validator("providers", "openai_enqueued_token_limits", "batch_prices", mode="before")
    @classmethod
    def _json_mapping(cls, value: Any) -> Any:
        # From the environment a mapping comes as JSON text.
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise ValueError(f"must be a JSON object ({exc})") from None
        return value

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, value: dict[str, NamedProvider]) -> dict[str, NamedProvider]:
        for name in value:
            if name in DEFAULT_PROVIDER_NAMES:
                raise ValueError(f"{name!r} is a default provider; set {name}_api_key and {name}_base_url")
            if not PROVIDER_NAME_PATTERN.fullmatch(name):
                raise ValueError(
                    f"provider name {name!r} must be 1 to 20 of a-z, 0-9, _ and -, from a letter"
                )
        return value

    @field_validator("openai_enqueued_token_limits")
    @classmethod
    def _positive_limits(cls, value: dict[str, int]) -> dict[str, int]:
        for model, tokens in value.items():
            if tokens <= 0:
                raise ValueError(f"the limit of {model!r} must be a positive number of tokens")
        return value

    @field_validator("database_url", "leader_database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a parseable database URL") from None
        if url.drivername not in SUPPORTED_DATABASE_DRIVERS:
            raise ValueError(
                f"driver {url.drivername!r} is not supported; "
                f"use one of {', '.join(SUPPORTED_DATABASE_DRIVERS)}"
            )
        return value

    @field_validator("leader_database_url")
    @classmethod
    def _leader_url_postgres(cls, value: str | None) -> str | None:
        if value is not None and not make_url(value).drivername.startswith("postgres"):
            raise ValueError("must be a PostgreSQL URL (the lock connection exists only on PostgreSQL)")
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}", value):
            raise ValueError(
                "must be 3 to 255 letters, digits, '.', '_' or '-', beginning with a letter or digit"
            )
        return value

    @field_validator("s3_prefix")
    @classmethod
    def _prefix_is_a_key(cls, value: str) -> str:
        from backburner.files.blobs.base import is_valid_key  # the blob keys' own rule

        stripped = value.strip("/")
        if stripped and not is_valid_key(stripped):
            raise ValueError(
                "must be `/`-separated segments of letters, digits, '.', '_' or '-', none starting with '.'"
            )
        return stripped

    @field_validator("cors_allowed_origins", "schedule_webhook_allowed_urls", mode="before")
    @classmethod
    def _list_from_text(cls, value: Any) -> Any:
        return parse_list_text(value) if isinstance(value, str) else value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if ORIGIN.fullmatch(origin) is None:
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme, host and optional port only, "
                    "like https://app.example.com or http://localhost:3000 (no path, no `*`)"
                )
        return value

    @field_validator("batch_completion_handler")
    @classmethod
    def _handler_reference(cls, value: str | None) -> str | None:
        if value is not None and not is_callable_reference(value):
            raise ValueError("must look like `package.module:function`")
        return value

    @field_validator("schedule_webhook_allowed_urls")
    @classmethod
    def _url_prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in value:
            problem = url_prefix_problem(prefix)
            if problem is not None:
                raise ValueError(f"{prefix!r} {problem}")
        return value

    @field_validator("schedule_handlers", mode="before")
    @classmethod
    def _handlers_from_text(cls, value: Any) -> Any:
        return parse_mapping_text(value) if isinstance(value, str) else value

    @field_validator("schedule_handlers")
    @classmethod
    def _handler_references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, reference in value.items():
            if not HANDLER_NAME.fullmatch(name):
                raise ValueError(f"handler name {name!r} must be 1 to 100 letters, digits, `_`, `-` or `.`")
            if not is_callable_reference(reference):
                raise ValueError(f"handler {name!r}: {reference!r} must look like `package.module:function`")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> Settings:
        if self.chunk_overlap_chars >= self.chunk_size_chars:
            raise ValueError(
                f"chunk_overlap_chars ({self.chunk_overlap_chars}) must be smaller than "
                f"chunk_size_chars ({self.chunk_size_chars})"
            )
        if self.watchdog_stall_threshold_seconds >= self.watchdog_timeout_threshold_seconds:
            raise ValueError(
                "watchdog_stall_threshold_seconds must be smaller than watchdog_timeout_threshold_seconds"
            )
        if self.auth_mode == "none" and not is_loopback_host(self.host):
            raise ValueError(
                f"auth_mode 'none' leaves every API route open, so it is allowed only on a loopback host; "
                f"host is {self.host!r} (set auth_mode to 'keys', or host to 127.0.0.1)"
            )
        if self.blob_store == "s3" and self.s3_bucket is None:
            raise ValueError("blob_store `s3` needs s3_bucket")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("s3_access_key_id and s3_secret_access_key go together: set both or neither")
        if self.file_max_concurrent_per_org is not None and self.file_max_concurrent_per_org > max(
            1, self.file_processing_workers
        ):
            raise ValueError(
                f"file_max_concurrent_per_org ({self.file_max_concurrent_per_org}) cannot exceed "
                f"file_processing_workers ({self.file_processing_workers})"
            )
        if self.embedder == "sentence-transformers" and self.embedding_model_path is None:
            raise ValueError("embedder `sentence-transformers` needs embedding_model_path (a local model)")
        return self

    # --- derived values ----------------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        """The database URL with the async driver made explicit."""
        return async_database_url(self.database_url or f"sqlite:///{self.data_dir / 'backburner.db'}")

    @property
    def effective_auth_mode(self) -> Literal["keys", "none"]:
        if self.auth_mode is not None:
            return self.auth_mode
        return "none" if is_loopback_host(self.host) else "keys"

    @property
    def is_postgres(self) -> bool:
        return self.effective_database_url.startswith("postgresql")

    @property
    def effective_batch_max_body_bytes(self) -> int:
        """The largest batch body: the largest batch any configured provider takes, by default."""
        if self.batch_max_body_bytes is not None:
            return self.batch_max_body_bytes
        named = [p.max_bytes or self.kind_max_bytes(p.kind) for p in self.providers.values()]
        return max([self.anthropic_batch_max_bytes, self.openai_batch_max_bytes, *named])

    def kind_max_bytes(self, kind: str) -> int:
        return self.anthropic_batch_max_bytes if kind == "anthropic" else self.openai_batch_max_bytes

    def kind_max_requests(self, kind: str) -> int:
        return self.anthropic_batch_max_requests if kind == "anthropic" else self.openai_batch_max_requests

    @property
    def effective_blob_store(self) -> Literal["local", "database", "s3"]:
        """`blob_store`, or what fits the database: instances on PostgreSQL may run on several
        hosts, so their blobs go to the database unless another shared store is chosen."""
        if self.blob_store is not None:
            return self.blob_store
        return "database" if self.is_postgres else "local"

    @property
    def effective_file_processes(self) -> int:
        return self.file_processing_processes or max(1, self.file_processing_workers)

    @property
    def effective_file_org_cap(self) -> int:
        """At most this many files of one organization in work on one instance."""
        if self.file_max_concurrent_per_org is not None:
            return self.file_max_concurrent_per_org
        return max(1, self.file_processing_workers - 1)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def scratch_dir(self) -> Path:
        """This host's temporary copies of blobs, for the processes that parse files."""
        return self.data_dir / "tmp"

    def timeout_message(self) -> str:
        return self.file_processing_timeout_error_message.format(self.file_processing_timeout_minutes)


def is_callable_reference(value: str) -> bool:
    """`package.module:function` (the function may be `Class.method`)."""
    module, _, function = value.partition(":")
    return (
        bool(module and function)
        and all(p.isidentifier() for p in module.split("."))
        and all(p.isidentifier() for p in function.split("."))
    )


def _json_text(text: str, opener: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"starts with `{opener}` but is not a JSON {what} ({exc})") from None


def parse_list_text(text: str) -> Any:
    """A list setting given as text (the environment): a JSON list, or comma-separated items."""
    stripped = text.strip()
    if stripped.startswith("["):
        return _json_text(stripped, "[", "list")
    return [item.strip() for item in stripped.split(",") if item.strip()]


def parse_mapping_text(text: str) -> Any:
    """A mapping setting given as text: a JSON object, or comma-separated `name=value` items."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return _json_text(stripped, "{", "object")
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in stripped.split(",")):
        if not item:
            continue
        name, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"{item!r} must look like `name=package.module:function`")
        mapping[name.strip()] = value.strip()
    return mapping


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def async_database_url(url: str) -> str:
    """Map the URL spellings an operator writes to the async drivers Backburner uses."""
    parsed = make_url(url)
    driver = {
        "sqlite": "sqlite+aiosqlite",
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
    }.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def field_section(name: str) -> str:
    extra = Settings.model_fields[name].json_schema_extra
    assert isinstance(extra, dict)
    return str(extra["section"])


def is_secret_field(name: str) -> bool:
    extra = Settings.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))


SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(field_section(n) for n in Settings.model_fields))
