"""Lake configuration: where LETL_HOME is, which tiers exist, their ranks and quotas.

Read at run time from explicit values first, then ``LETL_*`` environment
variables, then the embedded defaults, so that one import works on a laptop,
in CI and in a pod.
"""

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("letl")

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """'1GiB', '500MB', '0' (unlimited) -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 0, 512MiB, 20GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class TierSpec:
    name: str
    rank: int
    path: Path
    quota_bytes: int = 0  # 0: no quota


# name, rank, default quota; the defaults keep hot data small and let cold data grow.
DEFAULT_TIERS = (("pmem", 0, "1GiB"), ("ssd", 1, "20GiB"), ("hdd", 2, "0"))


@dataclass(frozen=True)
class LakeConfig:
    home: Path
    branch: str
    catalog_url: str
    tiers: tuple[TierSpec, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def staging(self) -> Path:
        """Scratch space for assets that write files themselves; same disk as the ssd tier."""
        return self.home / "staging"

    @classmethod
    def resolve(
        cls,
        home: str | None = None,
        branch: str | None = None,
        catalog_url: str | None = None,
        tier_paths: dict[str, str] | None = None,
        tier_quotas: dict[str, str] | None = None,
    ) -> "LakeConfig":
        env = os.environ
        home_path = Path(home or env.get("LETL_HOME") or ".letl").absolute()
        notes: list[str] = []
        tiers = []
        for name, rank, default_quota in DEFAULT_TIERS:
            path = (tier_paths or {}).get(name) or env.get(f"LETL_TIER_{name.upper()}_PATH")
            if not path:
                path = _default_pmem(home_path, notes) if name == "pmem" else str(home_path / "tiers" / name)
            quota = (tier_quotas or {}).get(name) or env.get(f"LETL_TIER_{name.upper()}_QUOTA") or default_quota
            tiers.append(TierSpec(name, rank, Path(path), parse_size(quota)))
        url = catalog_url or env.get("LETL_CATALOG_URL") or f"sqlite:///{home_path / 'catalog.sqlite'}"
        return cls(home_path, branch or env.get("LETL_BRANCH") or "main", url, tuple(tiers), tuple(notes))


def _default_pmem(home: Path, notes: list[str]) -> str:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        # One directory per LETL_HOME, so that two lakes on a machine never share hot data.
        tag = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        return str(shm / f"letl-{os.getuid()}-{tag}" / "pmem")
    note = f"no writable tmpfs at /dev/shm: tier 'pmem' falls back to {home / 'tiers' / 'pmem'} (a disk)"
    log.warning(note)
    notes.append(note)
    return str(home / "tiers" / "pmem")
