"""PDF pages without a text layer are counted and reported; a PDF with no text at all fails."""

from __future__ import annotations

import io

import httpx

from backburner.files.states import FileStatus
from tests.conftest import MakeSettings
from tests.support.files import served, wait_file

FAST = {"file_poll_interval_seconds": 0.1, "file_processing_processes": 1}


def pdf_pages(pages: list[str | None]) -> bytes:
    """One page per item: its text, or for None only a drawn rectangle (no text layer)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    for text in pages:
        if text is None:
            pdf.rect(100, 400, 300, 200, fill=1)
        else:
            pdf.drawString(50, 800, text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


async def _upload(client: httpx.AsyncClient, source_id: str, name: str, data: bytes) -> str:
    response = await client.post(
        f"/v1/sources/{source_id}/files", files={"file": (name, data, "application/pdf")}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_pages_without_text_are_counted_and_a_pdf_without_text_fails(
    make_settings: MakeSettings, database_url: str
) -> None:
    async with served(make_settings(database_url=database_url, **FAST)) as (_, client, runtime):
        source_id = str((await client.post("/v1/sources", json={"name": "scans"})).json()["id"])
        texts: list[str | None] = [f"Page {n} tells of the walrus archive." for n in range(1, 4)]
        mixed = await _upload(
            client, source_id, "mixed.pdf", pdf_pages([texts[0], None, texts[1], None, None])
        )
        one = await _upload(client, source_id, "one.pdf", pdf_pages([texts[2], None]))
        scanned = await _upload(client, source_id, "scanned.pdf", pdf_pages([None, None, None]))
        clean = await _upload(client, source_id, "clean.pdf", pdf_pages(texts))

        record = await wait_file(runtime, mixed, timeout_s=60)
        assert record.status is FileStatus.COMPLETED and record.chunks_embedded >= 1
        shown = (await client.get(f"/v1/files/{mixed}")).json()
        assert shown["warnings"] == ["3 of 5 pages have no text layer; they are not searchable"]
        assert (await wait_file(runtime, one, timeout_s=60)).status is FileStatus.COMPLETED
        assert (await client.get(f"/v1/files/{one}")).json()["warnings"] == [
            "1 of 2 pages has no text layer; it is not searchable"
        ]

        failed = await wait_file(runtime, scanned, timeout_s=60)
        assert failed.status is FileStatus.ERROR and failed.chunks_embedded == 0
        assert failed.error_message is not None
        assert "none of the PDF's 3 pages has a text layer" in failed.error_message

        assert (await wait_file(runtime, clean, timeout_s=60)).status is FileStatus.COMPLETED
        listed = (await client.get(f"/v1/sources/{source_id}/files")).json()
        listed = listed["files"] if isinstance(listed, dict) else listed
        warnings = {f["file_name"]: f["warnings"] for f in listed}
        assert warnings["clean.pdf"] == [] and warnings["scanned.pdf"] == []
        assert warnings["mixed.pdf"] == ["3 of 5 pages have no text layer; they are not searchable"]
