"""Two instances as on two hosts: one PostgreSQL database, a data directory each, default
settings (or `blob_store=s3`). Files uploaded through either are all completed, whichever
instance claims them, and a search through one finds what was uploaded through the other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import BackburnerProcess, free_port, wait_until
from tests.support.s3server import S3Server

pytestmark = pytest.mark.acceptance

FILES_PER_INSTANCE = 6
ANIMALS = [
    "otter",
    "heron",
    "badger",
    "puffin",
    "walrus",
    "lynx",
    "gecko",
    "mole",
    "ibis",
    "tapir",
    "quokka",
    "okapi",
]
COLOURS = [
    "crimson",
    "amber",
    "jade",
    "cobalt",
    "ivory",
    "ochre",
    "violet",
    "scarlet",
    "teal",
    "umber",
    "saffron",
    "indigo",
]
THINGS = [
    "pebbles",
    "feathers",
    "acorns",
    "shells",
    "buttons",
    "marbles",
    "keys",
    "coins",
    "ribbons",
    "beads",
    "thimbles",
    "spoons",
]


def fact(number: int) -> str:
    return f"The {ANIMALS[number]} hoards {COLOURS[number]} {THINGS[number]}."


def document(number: int) -> bytes:
    filler = " ".join(f"Paragraph {n} of document {number} says little of note." for n in range(30))
    return f"# Notes {number}\n\n{filler}\n\n## Fact\n\n{fact(number)}\n\n## More\n\n{filler}\n".encode()


def host(tmp_path: Path, name: str, postgres_url: str, extra: dict[str, Any]) -> BackburnerProcess:
    """An instance with its own data directory, as on its own host, and otherwise default settings."""
    port = free_port()
    data_dir = tmp_path / name
    data_dir.mkdir()
    values = {"database_url": postgres_url, "data_dir": str(data_dir), "port": port, "log_format": "json"}
    values.update(extra)
    env = {f"BACKBURNER_{key.upper()}": str(value) for key, value in values.items()}
    return BackburnerProcess(["serve"], env, data_dir, tmp_path / f"{name}.log", port=port)


def claims(instance: BackburnerProcess) -> set[str]:
    found = set()
    for line in instance.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "file.claimed":
            found.add(record["file_id"])
    return found


@pytest.mark.parametrize("store", ["default", "s3"])
def test_two_hosts_complete_every_file_and_search_each_others(
    postgres_url: str, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    extra: dict[str, Any] = {}
    if store == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        extra = server.settings(server.new_bucket())
    instances = [host(tmp_path, name, postgres_url, extra) for name in ("host-a", "host-b")]
    try:
        for instance in instances:
            instance.wait_ready(60)
            assert "blobs.local_on_postgres" not in instance.log()
        first, second = instances
        source = httpx.post(f"{first.url}/v1/sources", json={"name": "shared"}, timeout=30).json()
        uploaded: dict[str, tuple[int, BackburnerProcess]] = {}
        for number in range(2 * FILES_PER_INSTANCE):
            through = instances[number % 2]
            response = httpx.post(
                f"{through.url}/v1/sources/{source['id']}/files",
                files={"file": (f"notes-{number}.md", document(number), "text/markdown")},
                timeout=30,
            )
            assert response.status_code == 201, response.text
            uploaded[response.json()["id"]] = (number, through)

        def statuses() -> dict[str, str]:
            return {
                file_id: httpx.get(f"{second.url}/v1/files/{file_id}", timeout=10).json()["status"]
                for file_id in uploaded
            }

        def all_finished() -> dict[str, str] | None:
            found = statuses()
            return found if all(status in ("completed", "error") for status in found.values()) else None

        finished: dict[str, str] = wait_until(all_finished, 180, "every file to finish", interval_s=0.5)
        errors = {
            file_id: httpx.get(f"{first.url}/v1/files/{file_id}", timeout=10).json()["error_message"]
            for file_id, status in finished.items()
            if status != "completed"
        }
        assert errors == {}, errors
        claimed = [claims(instance) for instance in instances]
        assert set().union(*claimed) == set(uploaded)

        for file_id, (number, through) in uploaded.items():
            other = second if through is first else first
            hits = httpx.get(
                f"{other.url}/v1/sources/{source['id']}/search",
                params={"q": fact(number), "k": 1},
                timeout=30,
            ).json()
            assert hits["results"][0]["file_id"] == file_id, (number, hits)
            assert fact(number) in hits["results"][0]["text"]
    finally:
        for instance in instances:
            instance.stop()
