"""Every kind of result line parses with the SDKs' own models."""

from __future__ import annotations

import json
from typing import Any

from anthropic.types.messages import MessageBatchIndividualResponse
from openai.types.chat import ChatCompletion
from openai.types.completion import Completion

from backburner.emulator.lifecycle import timeline
from backburner.emulator.outcomes import Scenario, plan_items
from backburner.emulator.records import BatchRecord, ModelColumn, OpenAIDetails
from backburner.emulator.results import anthropic_result_lines, openai_error_lines, openai_output_lines

IDS = ["ok", 'quote"and\\slash', "unicode-é", "bad-error", "old-expire", "x", "y", "z"]


def make_batch(endpoint: str | None = None) -> BatchRecord:
    scenario = Scenario(expire_after_items=6)  # the last two items expire with the batch
    return BatchRecord(
        id="b",
        provider="openai" if endpoint else "anthropic",
        seq=7,
        custom_ids=IDS,
        models=ModelColumn(["model-a", "model-b"] * 4),
        scenario=scenario,
        plan=plan_items(IDS, scenario),
        created_at=0.0,
        natural_end_at=10.0,
        openai=OpenAIDetails(endpoint, "in", "24h", None, "out", "err") if endpoint else None,
    )


def parse(lines: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def test_anthropic_lines_cover_every_outcome_and_validate() -> None:
    batch = make_batch()
    lines = parse(anthropic_result_lines(batch, timeline(batch, 0)))

    parsed = [MessageBatchIndividualResponse.model_validate(line) for line in lines]

    assert [line.custom_id for line in parsed] == IDS
    assert [line.result.type for line in parsed] == ["succeeded"] * 3 + [
        "errored",
        "expired",
        "succeeded",
    ] + ["expired"] * 2
    first = parsed[1].result
    assert first.type == "succeeded"
    assert first.message.model == "model-b"
    assert first.message.content[0].text == f"Emulated reply to {IDS[1]}."  # type: ignore[union-attr]
    assert len({line.result.message.id for line in parsed if line.result.type == "succeeded"}) == 4


def test_openai_output_and_error_lines_split_by_outcome() -> None:
    batch = make_batch("/v1/chat/completions")
    line = timeline(batch, 0)

    outputs = parse(openai_output_lines(batch, line))
    errors = parse(openai_error_lines(batch, line))

    assert [item["custom_id"] for item in outputs] == ["ok", IDS[1], IDS[2], "x"]
    for item in outputs:
        completion = ChatCompletion.model_validate(item["response"]["body"])
        assert completion.choices[0].message.content == f"Emulated reply to {item['custom_id']}."
    assert [(item["custom_id"], item["error"] and item["error"]["code"]) for item in errors] == [
        ("bad-error", None),
        ("old-expire", "batch_expired"),
        ("y", "batch_expired"),
        ("z", "batch_expired"),
    ]
    assert len({item["id"] for item in outputs + errors}) == len(IDS)


def test_completion_bodies_validate() -> None:
    batch = make_batch("/v1/completions")
    for item in parse(openai_output_lines(batch, timeline(batch, 0))):
        Completion.model_validate(item["response"]["body"])
