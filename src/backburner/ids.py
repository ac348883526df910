"""Identifiers: a readable prefix and 128 random bits."""

import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"
