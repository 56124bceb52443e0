"""Readiness: can this instance serve creates right now?"""

from __future__ import annotations

from gateway.errors import StoreUnavailable
from gateway.router import Router
from gateway.store import TaskStore


class Readiness:
    def __init__(self, store: TaskStore, router: Router) -> None:
        self._store = store
        self._router = router

    async def reasons(self) -> list[str]:
        """Why this instance is not ready; empty when it is."""
        reasons = []
        try:
            await self._store.ping()
        except StoreUnavailable as exc:
            reasons.append(f"redis unreachable: {exc}")
        if not any(r.config.enabled for r in self._router.routes.values()):
            reasons.append("no provider is enabled")
        return reasons
