"""The bearer key → client name table (:class:`ClientKeys`).

Kept apart from :mod:`gateway.auth` (which needs the web framework) so that
:mod:`gateway.live`, which replaces the table on a reload, stays light for the parent of
workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from pydantic import SecretStr


class ClientKeys:
    """Maps a presented key to its client's name.

    Keys are looked up by their SHA-256 digest, so no comparison leaks a key's prefix through
    timing and the plain keys are not kept in a dict.
    """

    def __init__(self, keys: Mapping[str, SecretStr]) -> None:
        self._by_digest = {_digest(key.get_secret_value()): name for name, key in keys.items()}

    def identify(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self._by_digest.get(_digest(token.strip()))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
