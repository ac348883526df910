"""Helpers for file-processing tests: real documents of every supported type, waiting on files."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import httpx
from fastapi import FastAPI

from backburner.files.blobs import iter_bytes
from backburner.files.component import FileProcessing
from backburner.files.states import TERMINAL, FileStatus
from backburner.files.store.leases import ClaimRules
from backburner.files.store.records import FileRecord, NewFile
from backburner.ids import new_id
from backburner.runtime import Runtime
from backburner.settings_loader import LoadedSettings
from tests.support.app import asgi_client, started_app

ORG = "org-default"


@dataclass(frozen=True)
class Sample:
    name: str
    content_type: str
    data: bytes
    phrase: str  # a sentence the parsed text must contain


def pdf_bytes(lines: list[str]) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    y = 800
    for line in lines:
        if y < 60:
            pdf.showPage()
            y = 800
        pdf.drawString(50, y, line)
        y -= 18
    pdf.save()
    return buffer.getvalue()


def docx_bytes(title: str, paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "cell one"
    table.rows[0].cells[1].text = "cell two"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def samples() -> list[Sample]:
    """One real file per parser, each holding a sentence the tests look for."""
    return [
        Sample(
            "notes.txt", "text/plain", b"Plain notes.\n\nThe otter sleeps holding hands.\n", "otter sleeps"
        ),
        Sample(
            "script.py",
            "text/x-python",
            b'def greet():\n    """The heron greets at dawn."""\n    return 1\n',
            "heron greets at dawn",
        ),
        Sample(
            "guide.md",
            "text/markdown",
            b"# Guide\n\nIntro.\n\n## Badgers\n\nThe badger digs long tunnels.\n",
            "badger digs long tunnels",
        ),
        Sample(
            "page.html",
            "text/html",
            b"<html><head><style>p{}</style><script>var x=1;</script></head>"
            b"<body><h1>Birds</h1><p>The puffin nests on cliffs.</p></body></html>",
            "puffin nests on cliffs",
        ),
        Sample(
            "paper.pdf",
            "application/pdf",
            pdf_bytes(["A short paper.", "The walrus basks on ice floes."]),
            "walrus basks on ice floes",
        ),
        Sample(
            "report.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            docx_bytes("Report", ["The lynx hunts at night."]),
            "lynx hunts at night",
        ),
        Sample(
            "data.json",
            "application/json",
            json.dumps({"animal": "The gecko climbs glass walls.", "n": [1, 2]}).encode(),
            "gecko climbs glass walls",
        ),
        Sample(
            "table.csv",
            "text/csv",
            b"animal,fact\nmole,The mole smells in stereo.\nbee,dances\n",
            "mole smells in stereo",
        ),
    ]


def filler_paragraphs(count: int, seed: int = 7) -> list[str]:
    """Paragraphs of plausible words on no topic in particular."""
    rng = random.Random(seed)
    words = [
        "market",
        "river",
        "cloud",
        "engine",
        "garden",
        "window",
        "letter",
        "station",
        "harbor",
        "mountain",
        "silver",
        "bridge",
        "forest",
        "candle",
        "winter",
        "orchard",
        "library",
        "compass",
        "meadow",
        "lantern",
        "valley",
        "signal",
        "paper",
        "stone",
        "thunder",
        "pocket",
        "island",
        "mirror",
        "velvet",
        "ladder",
        "copper",
        "summit",
        "theatre",
        "canvas",
        "meteor",
        "tunnel",
    ]
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(40, 90))).capitalize() + "."
        for _ in range(count)
    ]


@asynccontextmanager
async def served(loaded: LoadedSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Runtime]]:
    """The API app with its runtime started, and a client talking to it in-process."""
    async with started_app(loaded) as app, asgi_client(app) as client:
        yield app, client, app.state.runtime


def component(runtime: Runtime) -> FileProcessing:
    assert runtime.files is not None, "file processing has not started"
    return runtime.files


async def wait_file(
    runtime: Runtime, file_id: str, statuses: frozenset[FileStatus] = TERMINAL, timeout_s: float = 30
) -> FileRecord:
    """Wait until the file reaches one of `statuses` (by default any terminal one)."""
    stores = component(runtime).stores
    deadline = time.monotonic() + timeout_s
    while True:
        record = await stores.catalog.get(ORG, file_id)
        if record.status in statuses:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"file {file_id} still {record.status} after {timeout_s} s: {record}")
        await asyncio.sleep(0.05)


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Await an async predicate until it is true, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def create_source(runtime: Runtime, name: str = "docs") -> str:
    source = await component(runtime).service.create_source(ORG, name, None)
    return source.id


async def add_file(
    runtime: Runtime, source_id: str, data: bytes, *, name: str = "doc.md", created_at: datetime | None = None
) -> FileRecord:
    """A PENDING file with its blob, created at `created_at` (to put its deadline near)."""
    files = component(runtime)
    file_id = new_id("file")
    key = f"files/{file_id}"
    info = await files.blobs.write_stream(key, iter_bytes(data))
    return await files.stores.catalog.create(
        NewFile(
            id=file_id,
            organization_id=ORG,
            source_id=source_id,
            file_name=name,
            content_type=None,
            size_bytes=info.size,
            sha256=info.sha256,
            blob_key=key,
        ),
        created_at or runtime.clock.now(),
    )


async def wait_first_sweep(runtime: Runtime, timeout_s: float = 30) -> None:
    """Wait until the leader's first sweeper run has finished (it runs as soon as one leads), so
    that a test can then age files that only the code under test will time out."""
    from sqlalchemy import select

    from backburner.files.sweeper import JOB_ID
    from backburner.leader.tables import job_runs

    async def swept() -> bool:
        async with runtime.engine.connect() as conn:
            found = await conn.execute(
                select(job_runs.c.id).where(job_runs.c.job_id == JOB_ID, job_runs.c.finished_at.is_not(None))
            )
            return found.first() is not None

    await wait_for(swept, timeout_s, "the first sweeper run")


def claim_rules(
    *, lease_s: float = 30, max_attempts: int = 3, timeout_minutes: float = 30, org_cap: int = 1000
) -> ClaimRules:
    """Claim rules for store tests: every lease counts as this instance's."""
    return ClaimRules(
        lease_s=lease_s,
        max_attempts=max_attempts,
        timeout_minutes=timeout_minutes,
        org_cap=org_cap,
        owner_prefix="",
    )
