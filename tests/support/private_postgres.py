"""A PostgreSQL server of one test's own, for tests that restart the server.

Restarting the shared server on 127.0.0.1:5432 would break every other test using it, in this
run and in any other run beside it. The server is made by the machine's own `initdb` in a
temporary directory, listens on a free port and is removed afterwards.
"""

from __future__ import annotations

import getpass
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.support.processes import free_port

OWNER = "postgres"  # initdb refuses to run as root


def _bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}")) or [shutil.which(tool) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {tool} is not installed")
    return found[-1]


class PrivatePostgres:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [_bin(tool), *args]
        if getpass.getuser() == "root":
            command = ["runuser", "-u", OWNER, "--", *command]
        # Output goes to a file: the server started by `pg_ctl` would hold a pipe open for ever.
        with (self.directory / "commands.log").open("ab") as log:
            subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=120)

    def _pg_ctl(self, action: str) -> None:
        data, log = str(self.directory / "data"), str(self.directory / "server.log")
        self._run("pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-m", "fast", action)

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self) -> None:
        self._pg_ctl("restart")

    def stop(self) -> None:
        self._pg_ctl("stop")

    def init(self) -> None:
        data = self.directory / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.directory}'",
            "fsync": "off",
            "max_connections": "50",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    directory = Path(tempfile.mkdtemp(prefix="bb-private-pg-"))
    if getpass.getuser() == "root":
        shutil.chown(directory, OWNER, OWNER)
    os.chmod(directory, 0o700)
    server = PrivatePostgres(directory, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        with suppress(subprocess.CalledProcessError):  # it was not running
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
