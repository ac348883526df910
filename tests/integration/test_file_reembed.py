"""Re-embedding a source with another model, on both databases: the estimate, refusals that
change nothing, the background work with search answering from the old model until the atomic
switch, passages written during the work, files ingested after it, and a SIGKILLed instance whose
work another process resumes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from backburner.db.engine import create_engine_for_url
from backburner.files.embedding.feature_hashing import HashEmbedder
from backburner.files.states import FileStatus
from backburner.files.store.reembeds import ReembedStore
from backburner.files.tables import passage_vectors, passages
from tests.conftest import MakeSettings
from tests.support.embedding_endpoint import EmbeddingEndpoint
from tests.support.files import filler_paragraphs, served, wait_file, wait_for
from tests.support.processes import BackburnerProcess, free_port, wait_until

OLD = "feature-hash-v1-256"
NEW = "feature-hash-v1-512"
FAST = {"file_poll_interval_seconds": 0.1, "file_processing_processes": 1}
SMALL_CHUNKS = {"chunk_size_chars": 200, "chunk_overlap_chars": 0, "searches_per_minute": 100_000}
QUERY = "Where are the spare keys stored?"
KEYS = "The spare keys are stored in the blue tin above the boiler."


async def _upload(client: httpx.AsyncClient, source_id: str, name: str, body: str) -> str:
    response = await client.post(
        f"/v1/sources/{source_id}/files", files={"file": (name, body.encode(), "text/plain")}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _vector_search(client: httpx.AsyncClient, source_id: str) -> list[tuple[int, float]]:
    response = await client.get(
        f"/v1/sources/{source_id}/search", params={"q": QUERY, "k": 10, "mode": "vector"}
    )
    assert response.status_code == 200, response.text
    return [(hit["passage_id"], round(hit["score"], 5)) for hit in response.json()["results"]]


async def _expected_scores(database_url: str, source_id: str, dimensions: int) -> dict[int, float]:
    """Each passage's cosine with the query when the source's vectors are `hash-{dimensions}`:
    computed here from the passages' texts."""
    engine = create_engine_for_url(database_url, pool_size=2, max_overflow=0, pool_timeout=10)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(passages.c.id, passages.c.text).where(passages.c.source_id == source_id)
                )
            ).all()
    finally:
        await engine.dispose()
    embedder = HashEmbedder(dimensions)
    matrix = np.asarray(embedder.embed_sync([row.text for row in rows]), dtype=np.float32)
    query = np.asarray(embedder.embed_sync([QUERY])[0], dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
    scores = (matrix @ query) / np.where(norms > 0, norms, 1)
    return {int(row.id): float(score) for row, score in zip(rows, scores, strict=True)}


def _same_ranking(found: list[tuple[int, float]], expected: dict[int, float]) -> bool:
    """The search's scores are the expected ones, and it found the best (ties in any order)."""
    best = sorted(expected.values(), reverse=True)[: len(found)]
    return all(abs(expected[i] - score) < 1e-4 for i, score in found) and [
        s for _, s in found
    ] == pytest.approx(best, abs=1e-4)


def _corpus(paragraphs: int, seed: int) -> str:
    texts = filler_paragraphs(paragraphs, seed=seed)
    texts.insert(paragraphs // 2, KEYS)
    return "\n\n".join(texts)


async def _vector_counts(database_url: str, source_id: str) -> dict[str, int]:
    engine = create_engine_for_url(database_url, pool_size=2, max_overflow=0, pool_timeout=10)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(passage_vectors.c.model, func.count())
                .where(passage_vectors.c.source_id == source_id)
                .group_by(passage_vectors.c.model)
            )
            return {model: int(count) for model, count in rows}
    finally:
        await engine.dispose()


async def test_reembedding_estimates_refuses_bad_input_and_switches_when_every_passage_has_the_new_vector(
    make_settings: MakeSettings, database_url: str
) -> None:
    loaded = make_settings(
        database_url=database_url,
        batch_prices={NEW: {"input": 0.02, "output": 0}},
        reembed_passages_per_second=150,
        **SMALL_CHUNKS,
        **FAST,
    )
    async with served(loaded) as (_, client, runtime):
        source_id = str((await client.post("/v1/sources", json={"name": "docs"})).json()["id"])
        first = await _upload(client, source_id, "notes.txt", _corpus(60, seed=3))
        doomed = await _upload(client, source_id, "doomed.txt", _corpus(30, seed=9))
        for file_id in (first, doomed):
            assert (await wait_file(runtime, file_id)).status is FileStatus.COMPLETED
        before = await _vector_search(client, source_id)
        assert _same_ranking(before, await _expected_scores(database_url, source_id, 256))
        path = f"/v1/sources/{source_id}/reembed"
        assert (await client.get(path)).json() | {"started_at": None} == {
            "source_id": source_id,
            "status": "none",
            "model": None,
            "from_model": None,
            "active_model": OLD,
            "done": 0,
            "total": (total := (await client.get(path)).json()["total"]),
            "started_at": None,
            "finished_at": None,
        }
        assert total > 100

        # The estimate: every passage, tokens from characters, the price from the table.
        estimate = (await client.post(path, json={"model": "hash-512", "dry_run": True})).json()
        assert estimate["model"] == NEW and estimate["from_model"] == OLD
        assert estimate["passages"] == total and estimate["tokens"] > 0
        assert estimate["cost_usd"] == pytest.approx(estimate["tokens"] * 0.02 / 1e6, abs=1e-6)
        priceless = (await client.post(path, json={"model": "hash-128", "dry_run": True})).json()
        assert priceless["cost_usd"] is None

        # Refusals name the problem and change nothing.
        for model, status, words in [
            ("text-embedding-3-large", 400, "unknown embedding model"),
            ("hash-0", 400, "dimensions"),
            ("hash-256", 409, "already searches with"),
            (OLD, 409, "already searches with"),
        ]:
            refused = await client.post(path, json={"model": model})
            assert refused.status_code == status, refused.text
            assert words in refused.json()["detail"], refused.text
        for body in ({}, {"model": ""}, {"model": "a\x00b"}, {"model": 7}, {"model": "x" * 201}):
            assert (await client.post(path, json=body)).status_code == 422
        assert (
            await client.post("/v1/sources/source-nope/reembed", json={"model": "hash-512"})
        ).status_code == 404
        assert (await client.get(path)).json()["status"] == "none"
        assert await _vector_counts(database_url, source_id) == {}

        started = await client.post(path, json={"model": "hash-512"})
        assert started.status_code == 202, started.text
        assert started.json()["status"] == "running" and started.json()["active_model"] == OLD
        again = await client.post(path, json={"model": "hash-128"})
        assert again.status_code == 409 and "already being re-embedded" in again.json()["detail"]

        # A file written during the re-embedding is ingested with the old model and must get
        # the new vector too before the switch.
        async def some_done() -> bool:
            return (await client.get(path)).json()["done"] > 0

        await wait_for(some_done, 30, "re-embedding progress")
        # A file deleted during the re-embedding takes its passages' new vectors with it.
        assert (await client.delete(f"/v1/files/{doomed}")).status_code == 204
        during = await _upload(client, source_id, "late.txt", _corpus(20, seed=4))
        assert (await wait_file(runtime, during)).embedding_model == OLD
        old_scores = await _expected_scores(database_url, source_id, 256)

        seen: list[dict[str, Any]] = []

        async def switched() -> bool:
            ranking = await _vector_search(client, source_id)
            # Read after the search: still running then means it ran before the switch.
            progress = (await client.get(path)).json()
            seen.append(progress)
            if progress["status"] == "running":
                assert progress["active_model"] == OLD and progress["done"] <= progress["total"]
                # The old model answers until the switch, the late file's passages with it.
                assert _same_ranking(ranking, old_scores)
            return bool(progress["status"] == "completed")

        await wait_for(switched, 60, "the switch")
        final = seen[-1]
        assert final["active_model"] == NEW and final["done"] == final["total"]
        dones = [p["done"] for p in seen if p["status"] == "running"]
        assert dones == sorted(dones)

        after = await _vector_search(client, source_id)
        assert _same_ranking(after, await _expected_scores(database_url, source_id, 512))
        # Every passage ingested with the old model has its one new vector; none of another model.
        assert await _vector_counts(database_url, source_id) == {NEW: final["total"]}

        # Files ingested after the switch use the new model.
        later = await _upload(client, source_id, "later.txt", _corpus(10, seed=5))
        assert (await wait_file(runtime, later)).embedding_model == NEW
        latest = await _vector_search(client, source_id)
        assert _same_ranking(latest, await _expected_scores(database_url, source_id, 512))


# --- real processes: a SIGKILL mid-way, another process resumes ----------------------------------


def _env(database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    values = {
        "database_url": database_url,
        "data_dir": str(data_dir),
        "port": str(port),
        "log_format": "json",
        "file_poll_interval_seconds": "0.1",
        "file_processing_processes": "1",
        # A dead instance's chunk is taken over quickly.
        "file_lease_seconds": "2",
        # Slow enough that the kill lands mid-way.
        "reembed_passages_per_second": "80",
        "searches_per_minute": "100000",
        **{name: str(value) for name, value in SMALL_CHUNKS.items()},
    }
    return {f"BACKBURNER_{name.upper()}": value for name, value in values.items()}


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backburner", "files", "reembed", *args, "--url", url],
        capture_output=True,
        text=True,
        timeout=90,
    )


def _events(process: BackburnerProcess, name: str) -> list[dict[str, Any]]:
    found = []
    for line in process.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == name:
            found.append(record)
    return found


def _search_ranking(url: str, source_id: str) -> list[tuple[int, float]]:
    response = httpx.get(
        f"{url}/v1/sources/{source_id}/search", params={"q": QUERY, "k": 10, "mode": "vector"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return [(hit["passage_id"], round(hit["score"], 5)) for hit in response.json()["results"]]


def _completed(url: str, file_id: str) -> bool:
    status = httpx.get(f"{url}/v1/files/{file_id}", timeout=5).json()["status"]
    assert status != "error"
    return bool(status == "completed")


@pytest.mark.acceptance
def test_reembedding_killed_mid_way_resumes_in_another_process_and_switches_once_at_the_end(
    database_url: str, tmp_path: Path
) -> None:
    first_port, second_port = free_port(), free_port()
    first = BackburnerProcess(
        ["serve"],
        _env(database_url, tmp_path / "first", first_port),
        tmp_path,
        tmp_path / "first.log",
        port=first_port,
    )
    second: BackburnerProcess | None = None
    try:
        first.wait_ready(60)
        url = first.url
        source_id = httpx.post(f"{url}/v1/sources", json={"name": "docs"}, timeout=10).json()["id"]
        for name, seed in (("a.txt", 1), ("b.txt", 2)):
            body = _corpus(120, seed=seed).encode()
            uploaded = httpx.post(
                f"{url}/v1/sources/{source_id}/files", files={"file": (name, body, "text/plain")}, timeout=10
            )
            assert uploaded.status_code == 201, uploaded.text
            file_id = uploaded.json()["id"]
            wait_until(lambda file_id=file_id: _completed(url, file_id), 60, f"{name} to complete")
        old_scores = asyncio.run(_expected_scores(database_url, source_id, 256))
        assert _same_ranking(_search_ranking(url, source_id), old_scores)

        started = _cli(url, "--source", "docs", "--to", "hash-512", "--yes", "--no-wait")
        assert started.returncode == 0, started.stdout + started.stderr
        total = len(old_scores)
        assert f"{OLD} -> {NEW}: {total} passages" in started.stdout, started.stdout
        path = f"/v1/sources/{source_id}/reembed"
        wait_until(lambda: first.get(path).json()["done"] > 0, 60, "re-embedding progress")
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(10)

        killed_at = asyncio.run(_done_in_database(database_url, source_id))
        assert 0 < killed_at < total, (killed_at, total)

        second = BackburnerProcess(
            ["serve"],
            _env(database_url, tmp_path / "second", second_port),
            tmp_path,
            tmp_path / "second.log",
            port=second_port,
        )
        second.wait_ready(60)
        seen: list[dict[str, Any]] = []

        def switched() -> bool:
            assert second is not None
            ranking = _search_ranking(second.url, source_id)
            # Read after the search: still running then means it ran before the switch.
            progress = second.get(path).json()
            seen.append(progress)
            if progress["status"] == "running":
                # Search answers throughout, from the old model's vectors only.
                assert progress["active_model"] == OLD
                assert _same_ranking(ranking, old_scores), ranking
            return bool(progress["status"] == "completed")

        wait_until(switched, 90, "the resumed re-embedding to switch", interval_s=0.2)
        dones = [p["done"] for p in seen if p["status"] == "running"]
        assert dones and dones[0] >= killed_at and dones == sorted(dones)  # nothing lost
        assert any(done < total for done in dones)  # the second process did part of the work
        assert seen[-1]["active_model"] == NEW and seen[-1]["done"] == seen[-1]["total"] == total
        assert _same_ranking(
            _search_ranking(second.url, source_id),
            asyncio.run(_expected_scores(database_url, source_id, 512)),
        )
        # One vector per passage, of the new model only; the switch happened exactly once.
        assert asyncio.run(_vector_counts(database_url, source_id)) == {NEW: total}
        assert len(_events(first, "reembed.switched")) + len(_events(second, "reembed.switched")) == 1

        # The CLI refuses what cannot be done with exit status 2, naming the problem.
        same = _cli(second.url, "--source", "docs", "--to", "hash-512", "--yes")
        assert same.returncode == 2 and "already searches with" in same.stderr, same.stderr
        unknown = _cli(second.url, "--source", "docs", "--to", "no-such-model", "--yes")
        assert unknown.returncode == 2 and "unknown embedding model" in unknown.stderr, unknown.stderr
        nowhere = _cli(second.url, "--source", "nope", "--to", "hash-64", "--yes")
        assert nowhere.returncode == 2 and "no source named 'nope'" in nowhere.stderr, nowhere.stderr
        # And follows a re-embedding to its switch.
        back = _cli(second.url, "--source", "docs", "--to", "hash-256", "--yes")
        assert back.returncode == 0, back.stdout + back.stderr
        assert f"switched: search now uses {OLD}" in back.stdout, back.stdout
        assert _same_ranking(_search_ranking(second.url, source_id), old_scores)
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def _done_in_database(database_url: str, source_id: str) -> int:
    engine = create_engine_for_url(database_url, pool_size=2, max_overflow=0, pool_timeout=10)
    try:
        store = ReembedStore(engine)
        lacking, _ = await store.lacking(source_id, NEW)
        return await store.passage_count(source_id) - lacking
    finally:
        await engine.dispose()


async def test_reembedding_to_another_model_of_an_openai_compatible_endpoint(
    make_settings: MakeSettings, database_url: str
) -> None:
    """With `embedder: openai`, any model of the endpoint can be the target; the price table
    gives the cost, and the new vectors are keyed by the new model's name."""
    with EmbeddingEndpoint() as endpoint:
        loaded = make_settings(
            database_url=database_url,
            embedder="openai",
            embedding_base_url=endpoint.base_url,
            embedding_model="small-v1",
            batch_prices={"large-v2": {"input": 0.13, "output": 0}},
            **SMALL_CHUNKS,
            **FAST,
        )
        async with served(loaded) as (_, client, runtime):
            source_id = str((await client.post("/v1/sources", json={"name": "docs"})).json()["id"])
            file_id = await _upload(client, source_id, "notes.txt", _corpus(20, seed=8))
            assert (await wait_file(runtime, file_id)).status is FileStatus.COMPLETED
            before = await _vector_search(client, source_id)
            path = f"/v1/sources/{source_id}/reembed"
            estimate = (await client.post(path, json={"model": "large-v2", "dry_run": True})).json()
            assert estimate["from_model"] == "small-v1" and estimate["passages"] > 0
            assert estimate["cost_usd"] == pytest.approx(estimate["tokens"] * 0.13 / 1e6, abs=1e-6)
            refused = await client.post(path, json={"model": "bad model name"})
            assert refused.status_code == 400 and "unknown embedding model" in refused.json()["detail"]
            requests_before = endpoint.requests
            assert (await client.post(path, json={"model": "large-v2"})).status_code == 202

            async def switched() -> bool:
                return bool((await client.get(path)).json()["status"] == "completed")

            await wait_for(switched, 60, "the switch")
            assert endpoint.requests > requests_before
            progress = (await client.get(path)).json()
            assert progress["active_model"] == "large-v2" and progress["done"] == progress["total"]
            assert await _vector_counts(database_url, source_id) == {"large-v2": progress["total"]}
            # The endpoint's vectors do not depend on the model name: the same ranking, now
            # from the vectors keyed by the new model.
            assert [i for i, _ in await _vector_search(client, source_id)] == [i for i, _ in before]
