"""`backburner blobs verify` and `backburner blobs migrate` against a real database and stores."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from backburner.cli import app as cli
from backburner.clock import SystemClock, utcnow
from backburner.db.engine import create_engine
from backburner.files.blobs import build_blob_store, file_blob_key
from backburner.files.store import FileStores
from backburner.files.store.records import NewFile
from backburner.ids import new_id
from backburner.settings_loader import load_settings
from tests.support.files import ORG
from tests.support.s3server import S3Server


def env_of(values: dict[str, object]) -> dict[str, str]:
    return {f"BACKBURNER_{name.upper()}": str(value) for name, value in values.items()}


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["blobs", *args], env={"COLUMNS": "200", **env})
    return result.exit_code, result.stdout, result.stderr


def seed(values: dict[str, object], contents: list[bytes]) -> list[str]:
    """Files whose blobs hold `contents`, written to the store `values` configure."""

    async def work() -> list[str]:
        settings = load_settings(flags=values, environ={}).settings
        engine = create_engine(settings)
        try:
            stores = FileStores.on(engine)
            source = await stores.sources.create(ORG, new_id("source"), "docs", None, utcnow())
            keys = []
            async with build_blob_store(settings, engine, SystemClock()) as blobs:
                for data in contents:
                    file_id = new_id("file")
                    info = await blobs.write_bytes(file_blob_key(file_id), data)
                    await stores.catalog.create(
                        NewFile(
                            file_id,
                            ORG,
                            source.id,
                            "a.txt",
                            "text/plain",
                            info.size,
                            info.sha256,
                            file_blob_key(file_id),
                        ),
                        utcnow(),
                    )
                    keys.append(file_blob_key(file_id))
            return keys
        finally:
            await engine.dispose()

    return asyncio.run(work())


def test_verify_then_migrate_to_the_database_and_to_s3(
    database_url: str, tmp_path: Path, s3_server: S3Server
) -> None:
    local = {"database_url": database_url, "data_dir": tmp_path / "data", "blob_store": "local"}
    contents = [b"first file", b"second file " * 100_000, b"third"]
    keys = seed(local, contents)

    code, out, err = run(env_of(local), "verify")
    assert code == 0, err
    assert (
        f"checked 3 blobs ({sum(map(len, contents))} bytes) in the local store: 0 missing or corrupt" in out
    )

    code, out, err = run(env_of(local), "migrate", "--to", "database", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["source"], report["target"], report["copied"], report["skipped"]) == (
        "local",
        "database",
        3,
        0,
    )
    code, out, _ = run(env_of(local), "migrate", "--to", "database")
    assert code == 0 and "copied 0 blobs" in out and "3 were there already" in out
    code, out, _ = run(env_of({**local, "blob_store": "database"}), "verify")
    assert code == 0 and "in the database store: 0 missing or corrupt" in out

    (tmp_path / "data" / "blobs" / Path(keys[2])).write_bytes(b"thirD")  # rot behind the store's back
    code, out, _ = run(env_of(local), "verify", "--json")
    assert code == 1
    [problem] = json.loads(out)["problems"]
    assert (problem["key"], problem["problem"]) == (keys[2], "corrupt")

    bucket = s3_server.new_bucket()
    to_s3 = env_of({**local, **s3_server.settings(bucket), "blob_store": "local"})
    code, out, _ = run(to_s3, "migrate", "--to", "s3")
    assert code == 1
    assert "copied 2 blobs" in out and "1 not copied" in out and keys[2] in out and "corrupt" in out
    stored = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(item["Key"] for item in stored) == sorted(f"backburner/{key}" for key in keys[:2])


def test_bad_requests_exit_2_and_change_nothing(sqlite_url: str, tmp_path: Path, s3_server: S3Server) -> None:
    base = {"database_url": sqlite_url, "data_dir": tmp_path / "data"}
    seed(base, [b"content"])
    code, _, err = run(env_of({**base, "blob_store": "database"}), "migrate", "--to", "database")
    assert code == 2 and "the configured blob store is database already" in err
    code, _, err = run(env_of(base), "migrate", "--to", "s3")
    assert code == 2 and "--to s3 needs s3_bucket" in err
    missing = env_of({**base, **s3_server.settings("bb-no-such-bucket"), "blob_store": "local"})
    code, _, err = run(missing, "migrate", "--to", "s3")
    assert code == 2 and "the S3 bucket 'bb-no-such-bucket' does not exist" in err
    code, _, err = run(env_of(base), "migrate", "--to", "ftp")
    assert code == 2 and "ftp" in err
    code, out, _ = run(env_of(base), "verify")
    assert code == 0 and "checked 1 blobs" in out
    nowhere = {"database_url": "postgresql://postgres@127.0.0.1:5432/bb_no_such_database"}
    code, _, err = run(env_of({**base, **nowhere}), "verify")
    assert code == 2 and "'bb_no_such_database' does not exist" in err and "createdb" in err
