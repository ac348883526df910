"""Configuration of one emulator instance."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from backburner.emulator.faults import FaultRule
from backburner.emulator.outcomes import Scenario

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class EmulatorConfig(BaseModel):
    """Everything an emulator needs at start; faults and the scenario can change later via admin calls."""

    model_config = ConfigDict(extra="forbid")

    complete_after_s: float = Field(default=5.0, ge=0, description="A batch ends this long after creation.")
    cancel_after_s: float = Field(
        default=1.0, ge=0, description="A canceled batch stays canceling/cancelling this long."
    )
    validating_s: float = Field(
        default=0.5, ge=0, description="OpenAI batches are validating this long at first."
    )
    finalizing_s: float = Field(
        default=0.5, ge=0, description="OpenAI batches are finalizing this long before they complete."
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base of the results_url handed out; defaults to the address each request came to.",
    )
    embedding_latency_ms: float = Field(
        default=0.0, ge=0, le=60_000, description="Time `/v1/embeddings` waits before each answer."
    )
    anthropic_max_requests: int = Field(default=100_000, ge=1)
    anthropic_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="Largest create body: 413.")
    openai_max_requests: int = Field(default=50_000, ge=1)
    openai_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="Largest batch input file.")
    openai_enqueued_token_limits: dict[str, int] = Field(
        default_factory=dict,
        description="Tokens a model may have enqueued (batches not yet ended); a batch beyond it fails "
        "with `token_limit_exceeded`, as OpenAI's do.",
    )
    results_retention_s: float = Field(
        default=29 * 24 * 3600.0,
        ge=0,
        description="Anthropic: results can be read this long after creation, then the batch is archived.",
    )
    output_file_retention_s: float = Field(
        default=30 * 24 * 3600.0,
        ge=0,
        description="OpenAI: batch output and error files expire this long after creation.",
    )
    faults: list[FaultRule] = Field(default_factory=list, description="Faults active from the start.")
    scenario: Scenario = Field(default_factory=Scenario, description="Default scenario for new batches.")
