"""The identity of this process among the instances of a deployment."""

import os
import secrets
import socket


def make_instance_id() -> str:
    """Host, pid and a random part: unique even when pids repeat across containers."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
