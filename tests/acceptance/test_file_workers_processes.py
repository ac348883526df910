"""File workers as real `backburner` processes on PostgreSQL: SIGKILL mid-embedding, two instances
sharing 200 files, and the `files` CLI against a running server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from backburner.clock import SystemClock, utcnow
from backburner.db.engine import create_engine
from backburner.files.blobs import build_blob_store
from backburner.files.states import FileStatus
from backburner.files.store import FileStores
from backburner.files.store.records import FileRecord, NewFile
from backburner.files.tables import files as files_table
from backburner.files.tables import passages
from backburner.ids import new_id
from backburner.settings_loader import load_settings
from tests.support.embedding_endpoint import EmbeddingEndpoint
from tests.support.files import ORG, filler_paragraphs, pdf_bytes, wait_for
from tests.support.processes import BackburnerProcess, free_port, wait_until

pytestmark = pytest.mark.acceptance


class Seeder:
    """Creates files the way an upload does (blob, then PENDING row), from the test process."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        settings = load_settings(
            flags={"database_url": database_url, "data_dir": data_dir}, environ={}
        ).settings
        self.engine = create_engine(settings)
        self.stores = FileStores.on(self.engine)
        self.blobs = build_blob_store(settings, self.engine, SystemClock())

    async def source(self, name: str = "docs") -> str:
        return (await self.stores.sources.create(ORG, new_id("source"), name, None, utcnow())).id

    async def file(self, source_id: str, data: bytes, name: str = "doc.md") -> FileRecord:
        file_id = new_id("file")
        info = await self.blobs.write_bytes(f"files/{file_id}", data)
        return await self.stores.catalog.create(
            NewFile(
                file_id, ORG, source_id, name, "text/markdown", info.size, info.sha256, f"files/{file_id}"
            ),
            utcnow(),
        )

    async def statuses(self) -> Counter[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(files_table.c.status, func.count()).group_by(files_table.c.status)
            )
            return Counter({status: int(count) for status, count in rows})

    async def passages_of(self, file_id: str) -> tuple[int, int]:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.count(passages.c.chunk_index.distinct())).where(
                        passages.c.file_id == file_id
                    )
                )
            ).one()
        return int(row[0]), int(row[1])


@pytest.fixture
async def seeder(postgres_url: str, tmp_path: Path) -> Any:
    seeding = Seeder(postgres_url, tmp_path / "data")
    yield seeding
    await seeding.engine.dispose()


@pytest.fixture
def endpoint() -> Iterator[EmbeddingEndpoint]:
    with EmbeddingEndpoint() as served:
        yield served


def worker_env(database_url: str, tmp_path: Path, **settings: Any) -> dict[str, str]:
    values = {
        "database_url": database_url,
        "data_dir": str(tmp_path / "data"),
        "log_format": "json",
        "file_poll_interval_seconds": "0.2",
        "file_processing_processes": "1",
        "chunk_size_chars": "300",
        "chunk_overlap_chars": "30",
        **settings,
    }
    return {f"BACKBURNER_{name.upper()}": str(value) for name, value in values.items()}


def claims(process: BackburnerProcess) -> list[str]:
    found = []
    for line in process.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "file.claimed":
            found.append(record["file_id"])
    return found


async def test_a_worker_killed_mid_embedding_is_taken_over_with_no_passage_stored_twice(
    postgres_url: str, tmp_path: Path, seeder: Seeder, endpoint: EmbeddingEndpoint
) -> None:
    endpoint.delay_s = 0.15
    env = worker_env(
        postgres_url,
        tmp_path,
        embedder="openai",
        embedding_base_url=endpoint.base_url,
        embedding_model="test-embedder",
        embedding_batch_size="4",
        file_lease_seconds="2",
        file_processing_workers="1",
    )
    document = "\n\n".join(filler_paragraphs(40)).encode()
    record = await seeder.file(await seeder.source(), document)
    first = BackburnerProcess(["worker"], env, tmp_path, tmp_path / "first.log")
    second: BackburnerProcess | None = None
    try:

        async def embedding_under_way() -> bool:
            return (await seeder.stores.catalog.get(ORG, record.id)).chunks_embedded >= 8

        await wait_for(embedding_under_way, 60, "the first worker to store a few batches")
        pool_processes = psutil.Process(first.popen.pid).children(recursive=True)
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(10)
        stuck = await seeder.stores.catalog.get(ORG, record.id)
        assert stuck.status is FileStatus.EMBEDDING and stuck.lease_owner is not None
        assert stuck.total_chunks is not None and stuck.chunks_embedded < stuck.total_chunks
        # Requests of the killed worker still being answered are not the second worker's.
        wait_until(lambda: endpoint.active == 0, 10, "the killed worker's requests to end")
        texts_before = endpoint.texts

        second = BackburnerProcess(["worker"], env, tmp_path, tmp_path / "second.log")

        async def completed() -> bool:
            return (await seeder.stores.catalog.get(ORG, record.id)).status is FileStatus.COMPLETED

        await wait_for(completed, 60, "the second worker to complete the file")
        done = await seeder.stores.catalog.get(ORG, record.id)
        assert done.attempts == 2
        assert done.chunks_embedded == done.total_chunks == stuck.total_chunks
        assert await seeder.passages_of(record.id) == (done.total_chunks, done.total_chunks)
        # The second worker embedded exactly the chunks without a stored passage.
        assert endpoint.texts - texts_before == done.total_chunks - stuck.chunks_embedded
        assert claims(second) == [record.id]
        # The killed worker's pool process does not outlive it.
        wait_until(
            lambda: all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in pool_processes),
            15,
            "the killed worker's pool processes to exit",
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_two_instances_process_200_files_each_exactly_once(
    postgres_url: str, tmp_path: Path, seeder: Seeder
) -> None:
    env = worker_env(postgres_url, tmp_path, file_processing_workers="2", file_lease_seconds="10")
    instances = [BackburnerProcess(["worker"], env, tmp_path, tmp_path / f"worker-{n}.log") for n in range(2)]
    try:
        for instance in instances:
            wait_until(
                lambda instance=instance: "files.started" in instance.log(), 30, "the file workers to start"
            )
        source_id = await seeder.source()
        paragraphs = filler_paragraphs(400, seed=11)
        created = [
            await seeder.file(source_id, f"# File {n}\n\n{paragraphs[n]}\n\n{paragraphs[n + 200]}".encode())
            for n in range(200)
        ]

        async def all_done() -> bool:
            return (await seeder.statuses()).get("completed", 0) == 200

        await wait_for(all_done, 120, "200 files to complete")
        claimed = Counter(claims(instances[0]) + claims(instances[1]))
        assert set(claimed) == {record.id for record in created}
        assert set(claimed.values()) == {1}, [file_id for file_id, n in claimed.items() if n > 1]
        assert claims(instances[0]) and claims(instances[1]), "both instances should have taken files"
        for record in created:
            done = await seeder.stores.catalog.get(ORG, record.id)
            assert (done.status, done.attempts) == (FileStatus.COMPLETED, 1)
            assert await seeder.passages_of(record.id) == (done.total_chunks, done.total_chunks)
    finally:
        for instance in instances:
            instance.stop()


def cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backburner", "files", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def test_the_files_cli_uploads_follows_lists_and_shows(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = worker_env(sqlite_url, tmp_path, port=str(port), file_processing_processes="1")
    server = BackburnerProcess(["serve"], env, tmp_path, tmp_path / "serve.log", port=port)
    try:
        server.wait_ready(30)
        url = server.url
        (tmp_path / "guide.md").write_text("# Guide\n\n" + "\n\n".join(filler_paragraphs(30)))
        (tmp_path / "paper.pdf").write_bytes(pdf_bytes(["The walrus basks on ice floes."] * 40))
        (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 nothing else")
        (tmp_path / "tool.exe").write_bytes(b"MZ\x00\x01")

        uploaded = cli(
            "upload",
            str(tmp_path / "guide.md"),
            str(tmp_path / "paper.pdf"),
            "--source",
            "docs",
            "--wait",
            "--url",
            url,
        )
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
        assert uploaded.stdout.count("completed") >= 2, uploaded.stdout

        failing = cli(
            "upload",
            str(tmp_path / "broken.pdf"),
            str(tmp_path / "tool.exe"),
            "--source",
            "docs",
            "--wait",
            "--url",
            url,
        )
        assert failing.returncode == 1
        assert "unsupported file type" in failing.stdout and "corrupt PDF" in failing.stdout, failing.stdout

        listed = cli("list", "--source", "docs", "--json", "--url", url)
        assert listed.returncode == 0, listed.stderr
        files = {f["file_name"]: f for f in json.loads(listed.stdout)}
        assert {name: f["status"] for name, f in files.items()} == {
            "guide.md": "completed",
            "paper.pdf": "completed",
            "broken.pdf": "error",
        }
        shown = cli("status", files["guide.md"]["id"], "--url", url)
        assert shown.returncode == 0 and "completed" in shown.stdout and "embed (s)" in shown.stdout, (
            shown.stdout
        )
        assert cli("status", "file-missing", "--url", url).returncode == 1
        assert cli("list", "--url", "http://127.0.0.1:1").returncode == 1
    finally:
        server.stop()


def test_an_upload_is_streamed_not_held_in_memory(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = worker_env(sqlite_url, tmp_path, port=str(port), file_processing_workers="0")
    server = BackburnerProcess(["serve"], env, tmp_path, tmp_path / "serve.log", port=port)
    try:
        server.wait_ready(30)
        process = psutil.Process(server.popen.pid)
        source = httpx.post(f"{server.url}/v1/sources", json={"name": "big"}).json()
        line = b"streamed upload of a large text file that the server never holds whole\n"
        size = 40 * 1024 * 1024
        peak = {"rss": process.memory_info().rss}
        before = peak["rss"]

        def body() -> Iterator[bytes]:
            boundary_head = (
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
                b"Content-Type: text/plain\r\n\r\n"
            )
            yield boundary_head
            piece = line * (1024 * 1024 // len(line))
            sent = 0
            while sent < size:
                yield piece
                sent += len(piece)
                peak["rss"] = max(peak["rss"], process.memory_info().rss)
            yield b"\r\n--b--\r\n"

        response = httpx.post(
            f"{server.url}/v1/sources/{source['id']}/files",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=b"},
            timeout=120,
        )
        assert response.status_code == 201, response.text
        assert response.json()["size_bytes"] >= size
        grown_mb = (max(peak["rss"], process.memory_info().rss) - before) / 1e6
        assert grown_mb < 20, f"the server grew by {grown_mb:.0f} MB while receiving 40 MB"
    finally:
        server.stop()
