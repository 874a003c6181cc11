"""The landing zone where hospitals drop their monthly files."""

from pathlib import Path
from typing import Optional

import dagster as dg

from letl.labs.drops import Drop, LandingScan, find_drops, scan_landing
from letl.lake.sources import landing_root


class LandingZone(dg.ConfigurableResource):
    """LETL_LANDING, else LETL_HOME/landing. Files younger than settle_seconds are left for the next tick."""

    path: Optional[str] = None
    settle_seconds: float = 10.0

    def root(self) -> Path:
        return Path(self.path).absolute() if self.path else landing_root()

    def drops(self, month: str | None = None, settled: bool = True) -> list[Drop]:
        return find_drops(self.root(), month, self.settle_seconds if settled else 0)

    def scan(self, month: str | None = None, settled: bool = True) -> LandingScan:
        """Drops and the files under labs/ that are ignored, with their reasons."""
        return scan_landing(self.root(), month, self.settle_seconds if settled else 0)
