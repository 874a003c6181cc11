"""The landing zone where hospitals drop their monthly files."""

import os
from pathlib import Path
from typing import Optional

import dagster as dg

from ..labs.drops import Drop, LandingScan, find_drops, scan_landing


class LandingZone(dg.ConfigurableResource):
    """LETL_LANDING, else LETL_HOME/landing. Files younger than settle_seconds are left for the next tick."""

    path: Optional[str] = None
    settle_seconds: float = 10.0

    def root(self) -> Path:
        if self.path or os.environ.get("LETL_LANDING"):
            return Path(self.path or os.environ["LETL_LANDING"]).absolute()
        return Path(os.environ.get("LETL_HOME") or ".letl").absolute() / "landing"

    def drops(self, month: str | None = None, settled: bool = True) -> list[Drop]:
        return find_drops(self.root(), month, self.settle_seconds if settled else 0)

    def scan(self, month: str | None = None, settled: bool = True) -> LandingScan:
        """Drops and the files under labs/ that are ignored, with their reasons."""
        return scan_landing(self.root(), month, self.settle_seconds if settled else 0)
