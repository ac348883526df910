"""Preloaded by the fork server: the main module, imported there once.

Each process forked by the server imports the main module unless the server already has: for a
program that imports much (the CLI, a benchmark), most of a CPU-second per pool process, spent
before it can take its first file. Python 3.11 means to preload it when asked for `"__main__"`,
but never hands the server the main module's path; the main process leaves it here instead, in
an environment variable the server inherits.
"""

from __future__ import annotations

import logging
import os
import sys
from multiprocessing import spawn

MAIN_PATH_VARIABLE = "BACKBURNER_FORK_SERVER_MAIN"

log = logging.getLogger(__name__)


def main_path_for_fork_server() -> None:
    """In the main process, before the fork server starts: say which main module to preload."""
    path = spawn.get_preparation_data("pool").get("init_main_from_path")
    if path:
        os.environ[MAIN_PATH_VARIABLE] = path


def _import_main() -> None:
    path = os.environ.pop(MAIN_PATH_VARIABLE, None)
    if not path or getattr(sys.modules["__main__"], "__file__", None) == path:
        return
    try:
        spawn.import_main_path(path)  # as `__mp_main__`: its `if __name__ == "__main__"` stays shut
    except Exception:  # each pool process then imports it itself, as it would have
        log.warning("the fork server could not preload %s", path, exc_info=True)


_import_main()
