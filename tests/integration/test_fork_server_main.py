"""Pool processes fork from a server that imported the main module once: they never import it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROGRAM = """
import asyncio, json, os

with open(os.environ["IMPORT_LOG"], "a") as log:  # every import of this module leaves its pid
    log.write(f"{os.getpid()}\\n")

from backburner.files.offload import CpuPool


async def main() -> None:
    pool = CpuPool(2)
    await pool.wait_started()
    pids = sorted(set(await asyncio.gather(*(pool.run(os.getpid) for _ in range(20)))))
    pool.close()
    print(json.dumps({"main": os.getpid(), "pool": pids}))


if __name__ == "__main__":
    asyncio.run(main())
"""


def test_pool_processes_do_not_import_the_main_module_again(tmp_path: Path) -> None:
    program, log = tmp_path / "program.py", tmp_path / "imports.log"
    program.write_text(PROGRAM)
    done = subprocess.run(
        [sys.executable, str(program)],
        env={**os.environ, "IMPORT_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    ran = json.loads(done.stdout)
    importers = [int(line) for line in log.read_text().split()]
    # The program imported itself once; the pool processes found it imported (by the fork
    # server they forked from) and ran their calls without importing it again.
    assert importers.count(ran["main"]) == 1, (ran, importers)
    assert len(ran["pool"]) == 2 and not set(ran["pool"]) & set(importers), (ran, importers)
