"""Benchmark: does search find the passage that answers a question? Recall at 5 per mode.

A labelled corpus is generated with a fixed seed: documents about fictional organisations, each
a run of paragraphs holding facts (who holds which role since which year, where something is
kept, badge and room numbers, what something weighs) among paragraphs of general prose. Every
fact gets one question, asked the way a user would: by a name, by a number, or in other words
than the document's ("Where does X store ..." for "X keeps ... in ..."). The templates were
written once, before any figure was measured, and are not adjusted to any mode.

The documents are uploaded through the API of an in-process server (SQLite, the default `hash`
embedder, the default chunking) and processed by its workers; then each question is searched in
each mode with k = 5. A question counts as found when one of the five passages holds its fact
sentence whole. Prints `{"recall_at_5": {"vector", "lexical", "hybrid"}, ...}`.

Goal: `hybrid` at least 0.9 and above both others.

    .venv/bin/python bench/retrieval.py [--documents 60]
    .venv/bin/python bench/retrieval.py --quick     # 12 documents: a check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import httpx

from backburner.api.app import create_app
from backburner.settings_loader import load_settings

SEED = 1812
MODES = ("vector", "lexical", "hybrid")
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "tu",
    "sa",
    "vel",
    "dor",
    "an",
    "is",
    "bel",
    "qu",
    "ro",
    "zen",
    "ith",
    "mar",
    "fel",
    "gor",
    "pa",
    "ul",
    "nor",
    "eth",
    "vi",
]
ROLES = ["treasurer", "archivist", "chief engineer", "head librarian", "quartermaster", "chair", "auditor"]
OBJECTS = ["ledgers", "spare keys", "seed samples", "old maps", "charter", "payroll records", "radio sets"]
PLACES = [
    "the basement vault",
    "a locked cabinet on the second floor",
    "the north warehouse",
    "a safe behind the reception desk",
    "the attic above the workshop",
    "a rented unit by the harbour",
]
PROSE = [
    "Members meet on the first Monday of each month to review the accounts and plan the season.",
    "The organisation was founded by a handful of volunteers and has grown steadily ever since.",
    "Visitors are welcome during opening hours, though some rooms are closed for maintenance.",
    "Annual reports are published every spring and summarise the work of all committees.",
    "The building was renovated twice, most recently after a storm damaged the roof.",
    "New members receive a short introduction to the rules and a tour of the premises.",
    "Funding comes mostly from subscriptions, with occasional grants from the city council.",
    "The committee keeps minutes of every meeting, which members may read on request.",
    "A small café on the ground floor is run by volunteers on weekends.",
    "Records older than ten years are moved to long-term storage once a year.",
]


@dataclass(frozen=True)
class Fact:
    sentence: str  # as written in the document
    question: str  # as a user asks it


def name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def person(rng: random.Random) -> str:
    return f"{name(rng, 2)} {name(rng, 3)}"


def facts_about(org: str, rng: random.Random) -> list[Fact]:
    """One fact of each kind about `org`, with its question."""
    who, since, role = person(rng), rng.randint(1950, 2023), rng.choice(ROLES)
    thing, place = rng.choice(OBJECTS), rng.choice(PLACES)
    badge, room = rng.randint(10_000, 99_999), rng.randint(100, 999)
    holder = person(rng)
    weight, machine = rng.randint(20, 900), f"{name(rng, 2).lower()} press"
    return [
        Fact(f"{who} has served as {role} of the {org} since {since}.", f"Who is the {role} of the {org}?"),
        Fact(f"{who} has served as {role} of the {org} since {since}.", f"What position does {who} hold?"),
        Fact(f"The {org} keeps its {thing} in {place}.", f"Where does the {org} store the {thing}?"),
        Fact(f"The badge of {holder} carries the number {badge}.", f"Whose badge has number {badge}?"),
        Fact(f"{holder} works in room {room} of the {org}.", f"Which room is {holder} in?"),
        Fact(f"The {machine} of the {org} weighs {weight} kilograms.", f"How heavy is the {machine}?"),
    ]


def corpus(documents: int) -> tuple[list[tuple[str, str]], list[Fact]]:
    """(file name, text) per document, and every fact with its question."""
    rng = random.Random(SEED)
    files: list[tuple[str, str]] = []
    facts: list[Fact] = []
    for number in range(documents):
        org = f"{name(rng, 3)} Society"
        own = facts_about(org, rng)
        paragraphs = list(dict.fromkeys(fact.sentence for fact in own))
        paragraphs += [" ".join(rng.sample(PROSE, 3)) for _ in range(8)]
        rng.shuffle(paragraphs)
        files.append((f"society-{number:03d}.md", f"# The {org}\n\n" + "\n\n".join(paragraphs) + "\n"))
        facts += own
    return files, facts


async def wait_processed(client: httpx.AsyncClient, file_ids: list[str], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(file_ids)
    while pending:
        for file_id in list(pending):
            status = (await client.get(f"/v1/files/{file_id}")).json()["status"]
            if status == "error":
                raise RuntimeError(f"file {file_id} failed")
            if status == "completed":
                pending.discard(file_id)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} files not processed in {timeout_s} s")
        await asyncio.sleep(0.2)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    documents = 12 if args.quick else args.documents
    files, facts = corpus(documents)
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as workdir:
        loaded = load_settings(
            flags={
                "data_dir": Path(workdir) / "data",
                "database_url": f"sqlite+aiosqlite:///{workdir}/retrieval.db",
                "searches_per_minute": 1_000_000,
                "submissions_per_minute": 1_000_000,
                "file_poll_interval_seconds": 0.1,
            },
            environ={},
        )
        app = create_app(loaded)
        async with app.router.lifespan_context(app):
            await app.state.runtime.wait_ready(60)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
                source = (await client.post("/v1/sources", json={"name": "societies"})).json()["id"]
                ids = []
                for file_name, body in files:
                    response = await client.post(
                        f"/v1/sources/{source}/files",
                        files={"file": (file_name, body.encode(), "text/markdown")},
                    )
                    response.raise_for_status()
                    ids.append(response.json()["id"])
                await wait_processed(client, ids)
                harness.log(f"{documents} documents processed; {len(facts)} questions per mode")
                found = {mode: 0 for mode in MODES}
                for fact in facts:
                    for mode in MODES:
                        response = await client.get(
                            f"/v1/sources/{source}/search", params={"q": fact.question, "k": 5, "mode": mode}
                        )
                        response.raise_for_status()
                        texts = [" ".join(hit["text"].split()) for hit in response.json()["results"]]
                        found[mode] += any(fact.sentence in text for text in texts)
    return {
        "recall_at_5": {mode: round(found[mode] / len(facts), 3) for mode in MODES},
        "questions": len(facts),
        "documents": documents,
        "embedder": "hash",
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="12 documents")
    return parser.parse_args()


if __name__ == "__main__":
    harness.emit(asyncio.run(main(parse_args())))
