"""Lake configuration: every ``LETL_*`` setting (``SETTINGS``), where LETL_HOME is, which tiers exist.

Settings are read when they are used, never at import, from explicit values first, then ``LETL_*``
environment variables, then the defaults in ``SETTINGS``, so that one import works on a laptop, in
CI and in a pod, and a test's ``monkeypatch.setenv`` takes effect at once. A malformed value is an
``InvalidInput`` that names the variable, says what is wrong and shows a valid one.
"""

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

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


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | float | int | None) -> float | None:
    """'3600', '90m', '12h', '30d', '2w' -> seconds; None, '', 'none', 'off', 'never' -> None."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    if text.strip().lower() in ("", "none", "off", "never"):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise InvalidInput(f"not a duration: {text!r} (examples: 3600, 90m, 12h, 30d, none)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


@dataclass(frozen=True)
class Setting:
    name: str  # <NAME> or <TIER> stands for a tier's name: a family of variables, one per tier
    kind: str  # a key of _KINDS
    default: str | None  # as written in the environment; None: unset, the reader says what that means
    about: str
    example: str = ""  # a valid value for the error message, when the default is none
    secret: bool = False  # its value never appears in a message
    minimum: int = 0  # for kind int


S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("LETL_HOME", "path", ".letl", "catalog, tiers, staging, pseudonym key file, Dagster home"),
    S("LETL_LANDING", "path", None, "where hospitals drop files (unset: $LETL_HOME/landing)"),
    S("LETL_BRANCH", "str", "main", "namespace of every version written"),
    S("LETL_CATALOG_URL", "str", None, "SQLAlchemy URL of the catalog (unset: sqlite:///$LETL_HOME/catalog.sqlite)"),
    S("LETL_TIER_<NAME>_PATH", "str", None, "a tier's directory, s3://bucket/prefix or daos://pool/cont"),
    S("LETL_TIER_<NAME>_QUOTA", "size", None, "a tier's byte quota, 0 = none (unset: 1GiB pmem, 20GiB ssd, 0 else)",
      example="512MiB"),
    S("LETL_TIERS_FILE", "path", None, "YAML list of tiers (unset: $LETL_HOME/tiers.yaml if present)"),
    S("LETL_S3_ENDPOINT", "str", None, "a real CORTX / S3 endpoint for s3:// tiers (unset: the local object store)"),
    S("LETL_S3_ACCESS_KEY_ID", "str", "", "its access key id", secret=True),
    S("LETL_S3_SECRET_ACCESS_KEY", "str", "", "its secret key", secret=True),
    S("LETL_S3_REGION", "str", "us-east-1", "its region"),
    S("LETL_S3_MAX_CONCURRENCY", "int", "8", "multipart parts in flight per upload, ranges fetched ahead per download",
      minimum=1),
    S("LETL_S3_CHECKSUMS", "bool", "on", "CRC32 on every upload, checked by the server, instead of reading it "
      "back; off for an S3 server that refuses additional checksums"),
    S("LETL_OBJECTSTORE", "bool", "on", "off: `letl run` does not start the local object store"),
    S("LETL_PSEUDONYM_KEY", "str", None, "HMAC key for patient pseudonyms (unset: the key file)", secret=True),
    S("LETL_PSEUDONYM_KEY_FILE", "path", None, "the pseudonym key's file (unset: $LETL_HOME/pseudonym.key)"),
    S("LETL_STEWARDS", "list", "", "comma-separated user names that may read restricted datasets (gros://, API)"),
    S("LETL_SOURCE_ROOTS", "paths", "", "colon-separated absolute directories the HTTP API may read besides landing",
      example="/data/a:/data/b"),
    S("LETL_API_TOKEN", "str", None, "the HTTP API's bearer token, 32+ characters (unset: the API is off)", secret=True),
    S("LETL_API_MAX_BODY", "size", "64KiB", "HTTP request body cap (413 above it, checked before the body is read)"),
    S("LETL_REQUEST_WAIT", "seconds", "5", "how long a repeated live request waits for the first caller's answer"),
    S("LETL_LEASE_SECONDS", "seconds", "60", "heartbeat age after which an owner on another host counts as gone"),
    S("LETL_DUCKDB_MEMORY", "size", "512MiB", "the lab ingest's DuckDB memory limit (capped at half the memory left)"),
    S("LETL_POLICY_MAX_IDLE_<TIER>", "seconds-or-none", None, "idle time after which a version sinks a tier "
      "(unset: 1d pmem, 30d ssd, none else)", example="14d"),
    S("LETL_POLICY_PROMOTE_READS", "int", "3", "reads within the window that promote a version a tier", minimum=1),
    S("LETL_POLICY_PROMOTE_WINDOW", "seconds", "1d", "the window those reads count in"),
    S("LETL_POLICY_SUPERSEDED_RETENTION", "seconds", "7d", "time after which a superseded version goes coldest"),
    S("LETL_EXPLORER_QUERIES", "path", None, "a YAML file of named queries added to the built-in library"),
    S("LETL_EXPLORER_ROW_CAP", "int", "10000", "rows an explorer query shows", minimum=1),
    S("LETL_EXPLORER_DOWNLOAD_CAP", "int", "1000000", "rows an explorer download holds", minimum=1),
    S("LETL_EXPLORER_TIMEOUT_S", "seconds", "30", "an explorer query's time limit"),
    S("LETL_EXPLORER_CONFIRM_BYTES", "size", "512MiB", "scans above this ask the viewer to confirm"),
    S("LETL_EXPLORER_MEMORY_LIMIT", "str", "1GiB", "the explorer's DuckDB memory limit"),
    S("LETL_EXPLORER_THREADS", "int", "2", "the explorer's DuckDB threads", minimum=1),
    S("LETL_EXPLORER_PASSWORD", "str", None, "the analysts' password (unset, with no steward password: open)",
      secret=True),
    S("LETL_EXPLORER_STEWARD_PASSWORD", "str", None, "the stewards' password", secret=True),
    S("LETL_EXPLORER_STEWARDS", "list", "", "comma-separated sign-in e-mails with the steward role"),
    S("LETL_EXPLORER_USER", "str", None, "the explorer's user without sign-in (unset: the process's user)"),
    S("LETL_PROGRESS_BYTES", "size", "64MiB", "`letl tier move`/`write` show a progress bar (stderr) for files this big"),
    S("LETL_DEBUG", "bool", "off", "on: the CLI shows tracebacks"),
    S("LETL_FAILPOINT", "str", None, "the crash tests' hook: <step> dies there, pause_<step> stops there"),
)
del S


def _int(text: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise ValueError
    return int(text)


def _seconds(text: str) -> float:
    value = parse_duration(text)
    if value is None:
        raise ValueError
    return value


def _bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
        raise ValueError
    return word in ("on", "1", "true", "yes")


def _paths(text: str) -> tuple[Path, ...]:
    paths = tuple(Path(p.strip()) for p in text.split(":") if p.strip())
    if any(not p.is_absolute() for p in paths):
        raise ValueError
    return paths


# kind -> (parser of the environment's text, what a malformed value is not)
_KINDS: dict[str, tuple[Callable[[str], object], str]] = {
    "str": (str, ""),
    "path": (Path, ""),
    "int": (_int, "a whole number"),
    "seconds": (_seconds, "a duration (seconds, or a number with s/m/h/d/w)"),
    "seconds-or-none": (parse_duration, "a duration (seconds, or a number with s/m/h/d/w, or none)"),
    "size": (parse_size, "a size"),
    "bool": (_bool, "on or off"),
    "list": (lambda text: tuple(x.strip() for x in text.split(",") if x.strip()), ""),
    "paths": (_paths, "absolute directories separated by ':'"),
}
_BY_NAME = {s.name: s for s in SETTINGS}
_FAMILIES = [(re.compile(re.sub(r"<[A-Z]+>", "([A-Za-z0-9_]+)", s.name)), s) for s in SETTINGS if "<" in s.name]


def declared(name: str) -> Setting:
    """The table's row for a variable; KeyError for one nobody declared (a bug, not a user's mistake)."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    for pattern, spec in _FAMILIES:
        if pattern.fullmatch(name):
            return spec
    raise KeyError(f"{name} is not declared in letl.lake.config.SETTINGS")


def setting(name: str, environ: Mapping[str, str] | None = None):
    """The typed value of ``name`` now: from the environment, else its default (None when that is unset).
    An empty variable counts as unset."""
    spec = declared(name)
    text = (os.environ if environ is None else environ).get(name) or spec.default
    if text is None:
        return None
    parse, problem = _KINDS[spec.kind]
    try:
        value = parse(text)
        if spec.kind == "int" and value < spec.minimum:
            problem = f"at least {spec.minimum}"
            raise ValueError
    except ValueError:
        shown = "(hidden)" if spec.secret else repr(text)
        raise InvalidInput(f"{name}={shown} is not {problem}; for example {name}={spec.example or spec.default}") from None
    return value


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``name`` is given (not empty) rather than left to its default."""
    declared(name)
    return bool((os.environ if environ is None else environ).get(name))


def missing_default_lake() -> str | None:
    """Why there is no lake to read, or None. A reader never creates a lake: with neither LETL_HOME nor
    LETL_CATALOG_URL set, the default lake (./.letl) must exist, or opening it would leave an empty
    catalog wherever the reader runs (the CLI's readers and gros:// both ask)."""
    if is_set("LETL_HOME") or is_set("LETL_CATALOG_URL"):
        return None
    home = Path(setting("LETL_HOME")).absolute()
    if (home / "catalog.sqlite").is_file():
        return None
    return (f"no lake here: {home} holds no catalog and LETL_HOME is not set; set LETL_HOME to the lake's "
            "directory (or LETL_CATALOG_URL to its catalog), e.g. export LETL_HOME=/path/to/the/lake")


def family(prefix: str, environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The set variables of a family by their tier (``LETL_POLICY_MAX_IDLE_`` -> {'ssd': 1209600.0})."""
    env = os.environ if environ is None else environ
    return {name.removeprefix(prefix).lower(): setting(name, env) for name in env if name.startswith(prefix)}


def snapshot() -> tuple[tuple[str, str], ...]:
    """Every LETL_* variable set now: a key for what was built from them."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("LETL_")))


def format_size(n: float) -> str:
    """Bytes for people: 1234567 -> '1.2 MiB'.

    LETL shows every size in binary (IEC) units, the ones quotas and memory limits are set in, so
    that a 20GiB quota reads back as 20.0 GiB. ``parse_size`` still takes decimal units (MB, GB).
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
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
        home_path = Path(home or setting("LETL_HOME")).absolute()
        notes: list[str] = []
        tiers = []
        from_file = _tiers_file(home_path)
        for name, rank, default_quota in DEFAULT_TIERS:
            listed = from_file.get(name, {})
            location = (tier_paths or {}).get(name) or setting(f"LETL_TIER_{name.upper()}_PATH") or listed.get("location")
            if not location:
                location = _default_location(name, home_path, notes)
            if not location:
                continue
            quota = (tier_quotas or {}).get(name) or setting(f"LETL_TIER_{name.upper()}_QUOTA")
            if quota is None:  # the variable's 0 is no quota, not "unset"
                quota = listed.get("quota") or default_quota
            tiers.append(TierSpec(
                name, int(listed.get("rank", rank)), str(location), parse_size(quota),
                float(listed.get("high_watermark", 0.9)), float(listed.get("low_watermark", 0.7)),
            ))
        url = catalog_url or setting("LETL_CATALOG_URL") or f"sqlite:///{home_path / 'catalog.sqlite'}"
        return cls(home_path, branch or setting("LETL_BRANCH"), url, tuple(tiers), tuple(notes))


def object_store_credentials(home: Path) -> Path:
    """Where `letl objectstore up` keeps the local server's endpoint and generated keys."""
    return home / "objectstore" / "credentials.json"


def _tiers_file(home: Path) -> dict[str, dict]:
    """Optional YAML: {tiers: [{name, rank, location, quota, high_watermark, low_watermark}]}."""
    from letl.lake.tiers_file import read_tiers_file

    path = setting("LETL_TIERS_FILE") or home / "tiers.yaml"
    return read_tiers_file(path) if path.is_file() else {}


def _default_location(name: str, home: Path, notes: list[str]) -> str | None:
    if name == "pmem":
        return _default_pmem(home, notes)
    if name == "cortx":
        if object_store_credentials(home).is_file() or setting("LETL_S3_ENDPOINT"):
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
