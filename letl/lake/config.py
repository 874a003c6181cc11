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

from letl.lake.errors import InvalidInput

log = logging.getLogger("letl")

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """'1GiB', '500MB', '0' (unlimited) -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise InvalidInput(f"not a size: {text!r} (examples: 0, 512MiB, 20GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(n: float) -> str:
    """Bytes for people: 1234567 -> '1.2 MB' (decimal units, as disks are sold)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@dataclass(frozen=True)
class TierSpec:
    name: str
    rank: int
    location: str  # a directory, file://dir, s3://bucket/prefix or daos://pool/cont[/dict]
    quota_bytes: int = 0  # 0: no quota
    high_watermark: float = 0.9  # fraction of the quota at which the policy starts demoting
    low_watermark: float = 0.7  # ... and where it stops

    @property
    def scheme(self) -> str:
        return self.location.split("://", 1)[0] if "://" in self.location else "file"

    @property
    def path(self) -> Path | None:
        """The directory of a POSIX tier (a disk, a tmpfs or a DAOS dfuse mount); None otherwise."""
        if self.scheme != "file":
            return None
        return Path(self.location.removeprefix("file://"))


# name, rank, default quota; the defaults keep hot data small and let cold data grow.
DEFAULT_TIERS = (("pmem", 0, "1GiB"), ("ssd", 1, "20GiB"), ("hdd", 2, "0"), ("cortx", 3, "0"))
OBJECT_STORE_LOCATION = "s3://letl/lake"


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
        from_file = _tiers_file(home_path)
        for name, rank, default_quota in DEFAULT_TIERS:
            listed = from_file.get(name, {})
            location = (tier_paths or {}).get(name) or env.get(f"LETL_TIER_{name.upper()}_PATH") or listed.get("location")
            if not location:
                location = _default_location(name, home_path, notes)
            if not location:
                continue
            quota = (tier_quotas or {}).get(name) or env.get(f"LETL_TIER_{name.upper()}_QUOTA") or listed.get("quota")
            tiers.append(TierSpec(
                name, int(listed.get("rank", rank)), str(location), parse_size(quota or default_quota),
                float(listed.get("high_watermark", 0.9)), float(listed.get("low_watermark", 0.7)),
            ))
        url = catalog_url or env.get("LETL_CATALOG_URL") or f"sqlite:///{home_path / 'catalog.sqlite'}"
        return cls(home_path, branch or env.get("LETL_BRANCH") or "main", url, tuple(tiers), tuple(notes))


def object_store_credentials(home: Path) -> Path:
    """Where `letl objectstore up` keeps the local server's endpoint and generated keys."""
    return home / "objectstore" / "credentials.json"


def _tiers_file(home: Path) -> dict[str, dict]:
    """Optional YAML: {tiers: [{name, rank, location, quota, high_watermark, low_watermark}]}."""
    path = Path(os.environ.get("LETL_TIERS_FILE") or home / "tiers.yaml")
    if not path.is_file():
        return {}
    import yaml

    listed = (yaml.safe_load(path.read_text()) or {}).get("tiers", [])
    return {entry["name"]: entry for entry in listed}


def _default_location(name: str, home: Path, notes: list[str]) -> str | None:
    if name == "pmem":
        return _default_pmem(home, notes)
    if name == "cortx":
        if object_store_credentials(home).is_file() or os.environ.get("LETL_S3_ENDPOINT"):
            return OBJECT_STORE_LOCATION
        notes.append("tier 'cortx' is disabled: no object store (run 'letl objectstore up', or set "
                     "LETL_TIER_CORTX_PATH=s3://bucket/prefix with LETL_S3_ENDPOINT and keys)")
        return None
    return str(home / "tiers" / name)


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
