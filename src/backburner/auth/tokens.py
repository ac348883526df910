"""API key tokens: `bbk_<key id>_<secret>`. Only a hash of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "bbk"
KEY_ID_BYTES = 6
SECRET_BYTES = 24


@dataclass(frozen=True)
class Token:
    key_id: str
    secret: str

    def render(self) -> str:
        return f"{PREFIX}_{self.key_id}_{self.secret}"


def new_token() -> Token:
    return Token(secrets.token_hex(KEY_ID_BYTES), secrets.token_urlsafe(SECRET_BYTES))


def parse_token(text: str) -> Token | None:
    prefix, _, rest = text.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or len(key_id) != 2 * KEY_ID_BYTES or not secret:
        return None
    return Token(key_id, secret)


def hash_secret(secret: str) -> str:
    # The secret is 192 random bits, so a plain SHA-256 is enough: no password stretching needed.
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
