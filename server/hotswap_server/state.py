"""What the request handlers share, stored on the apps under one typed key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .devices import Placement
from .engine import Engine
from .metrics import ServerMetrics
from .settings import Settings
from .swap import SwapManager


@dataclass
class ServerState:
    settings: Settings
    placement: Placement
    metrics: ServerMetrics
    engine: Engine
    swaps: SwapManager
    admin_token: str | None
    draining: bool = False

    @property
    def model_id(self) -> str:
        if self.settings.model_id:
            return self.settings.model_id
        active = self.swaps.active
        return active.path.name if active else "none"


STATE: web.AppKey[ServerState] = web.AppKey("hotswap_state", ServerState)
