"""Result lines, generated one at a time from a batch's compact record.

Lines are filled into fixed templates rather than built as dicts and serialised: a 100,000-item
batch streams in well under a second this way. Each template is a valid line of the provider's
documented shape; the tests parse them with the SDKs' own models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from backburner.emulator.lifecycle import Timeline
from backburner.emulator.outcomes import Outcome
from backburner.emulator.records import BatchRecord

OUTPUT_TOKENS = 12


def _reply(custom_id_json: str) -> str:
    # The escaped id is valid inside any JSON string, so no second json.dumps is needed.
    return '"Emulated reply to ' + custom_id_json[1:-1] + '."'


def _planned(record: BatchRecord, line: Timeline) -> Iterator[tuple[int, str, Outcome]]:
    """Every item that gets a result line, with its final outcome."""
    codes = record.plan.codes
    missing = record.plan.missing
    processed = line.processed
    rest = line.rest
    for index, custom_id in enumerate(record.custom_ids):
        if index in missing:
            continue
        yield index, custom_id, Outcome(codes[index]) if index < processed else rest


# Anthropic


def anthropic_result_lines(record: BatchRecord, line: Timeline) -> Iterator[bytes]:
    models = [json.dumps(name) for name in record.models.names]
    position = record.models.position
    prefix = f"{record.seq:06x}"
    cached = record.scenario.cache_read_tokens
    for index, custom_id, outcome in _planned(record, line):
        cid = json.dumps(custom_id)
        if outcome is Outcome.SUCCEEDED:
            text = (
                f'{{"custom_id":{cid},"result":{{"type":"succeeded","message":{{'
                f'"id":"msg_emu{prefix}{index:08x}","type":"message","role":"assistant",'
                f'"model":{models[position(index)]},"content":[{{"type":"text","text":{_reply(cid)}}}],'
                f'"stop_reason":"end_turn","stop_sequence":null,'
                f'"usage":{{"input_tokens":{10 + len(custom_id)},"cache_creation_input_tokens":0,'
                f'"cache_read_input_tokens":{cached},"output_tokens":{OUTPUT_TOKENS}}}}}}}}}\n'
            )
        elif outcome is Outcome.ERRORED:
            text = (
                f'{{"custom_id":{cid},"result":{{"type":"errored","error":{{"type":"error",'
                f'"error":{{"type":"invalid_request_error","message":"Emulated error for this request."}},'
                f'"request_id":"req_emu{prefix}{index:08x}"}}}}}}\n'
            )
        elif outcome is Outcome.CANCELED:
            text = f'{{"custom_id":{cid},"result":{{"type":"canceled"}}}}\n'
        else:
            text = f'{{"custom_id":{cid},"result":{{"type":"expired"}}}}\n'
        yield text.encode()


# OpenAI

BodyTemplate = Callable[[str, int, str, str, int, int], str]
"""(model json, created, item key, custom id json, prompt tokens, cached of those) -> body json."""
_COMPLETION_DETAILS = (
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}'
)


def _chat_completion(model: str, created: int, key: str, cid: str, prompt_tokens: int, cached: int) -> str:
    return (
        f'{{"id":"chatcmpl-emu{key}","object":"chat.completion","created":{created},"model":{model},'
        f'"choices":[{{"index":0,"message":{{"role":"assistant","content":{_reply(cid)},"refusal":null,'
        f'"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],'
        f'"usage":{{"prompt_tokens":{prompt_tokens},"completion_tokens":{OUTPUT_TOKENS},'
        f'"total_tokens":{prompt_tokens + OUTPUT_TOKENS},'
        f'"prompt_tokens_details":{{"cached_tokens":{cached},"audio_tokens":0}},{_COMPLETION_DETAILS}}},'
        f'"service_tier":"default","system_fingerprint":null}}'
    )


def _completion(model: str, created: int, key: str, cid: str, prompt_tokens: int, cached: int) -> str:
    return (
        f'{{"id":"cmpl-emu{key}","object":"text_completion","created":{created},"model":{model},'
        f'"choices":[{{"text":{_reply(cid)},"index":0,"logprobs":null,"finish_reason":"stop"}}],'
        f'"usage":{{"prompt_tokens":{prompt_tokens},"completion_tokens":{OUTPUT_TOKENS},'
        f'"total_tokens":{prompt_tokens + OUTPUT_TOKENS}}},"system_fingerprint":null}}'
    )


def _embedding(model: str, created: int, key: str, cid: str, prompt_tokens: int, cached: int) -> str:
    seed = int(key[-8:], 16)
    vector = ",".join(f"{((seed * 31 + dim * 17) % 1000) / 1000:.3f}" for dim in range(4))
    return (
        f'{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[{vector}]}}],'
        f'"model":{model},"usage":{{"prompt_tokens":{prompt_tokens},"total_tokens":{prompt_tokens}}}}}'
    )


OPENAI_BODIES: dict[str, BodyTemplate] = {
    "/v1/chat/completions": _chat_completion,
    "/v1/completions": _completion,
    "/v1/embeddings": _embedding,
}
"""The endpoints whose responses the emulator can make up."""

_ITEM_ERRORS = {
    Outcome.EXPIRED: (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    Outcome.CANCELED: ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


def openai_output_lines(record: BatchRecord, line: Timeline) -> Iterator[bytes]:
    assert record.openai is not None
    body = OPENAI_BODIES[record.openai.endpoint]
    models = [json.dumps(name) for name in record.models.names]
    position = record.models.position
    prefix = f"{record.seq:06x}"
    created = int(line.end_at)
    cached = record.scenario.cache_read_tokens
    for index, custom_id, outcome in _planned(record, line):
        if outcome is not Outcome.SUCCEEDED:
            continue
        key = f"{prefix}{index:08x}"
        cid = json.dumps(custom_id)
        response = body(models[position(index)], created, key, cid, 10 + len(custom_id) + cached, cached)
        yield (
            f'{{"id":"batch_req_{key}","custom_id":{cid},"response":{{"status_code":200,'
            f'"request_id":"req_emu{key}","body":{response}}},"error":null}}\n'
        ).encode()


def openai_error_lines(record: BatchRecord, line: Timeline) -> Iterator[bytes]:
    prefix = f"{record.seq:06x}"
    for index, custom_id, outcome in _planned(record, line):
        if outcome is Outcome.SUCCEEDED:
            continue
        key = f"{prefix}{index:08x}"
        cid = json.dumps(custom_id)
        if outcome is Outcome.ERRORED:
            yield (
                f'{{"id":"batch_req_{key}","custom_id":{cid},"response":{{"status_code":400,'
                f'"request_id":"req_emu{key}","body":{{"error":{{'
                f'"message":"Emulated error for this request.","type":"invalid_request_error",'
                f'"param":null,"code":null}}}}}},"error":null}}\n'
            ).encode()
        else:
            code, message = _ITEM_ERRORS[outcome]
            yield (
                f'{{"id":"batch_req_{key}","custom_id":{cid},"response":null,'
                f'"error":{{"code":"{code}","message":"{message}"}}}}\n'
            ).encode()
