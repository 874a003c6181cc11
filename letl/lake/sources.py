"""Registered sources: the only things an outside request may bring into the lake.

A source is one of:

- a file inside the landing zone (``LETL_LANDING``, else ``LETL_HOME/landing``) or inside a
  directory of ``LETL_SOURCE_ROOTS`` (colon-separated), as an absolute path or ``file://`` URL;
- a lake version named by a ``gros://`` URI, read under the same access rules as gros://;
- a registered source id ``{project}/{set}/{sample}`` (sample sequence sets; none is registered yet).

Paths are resolved (symlinks included) before the containment check, so a link in the landing
zone cannot point out of it. Whatever the roots say, the server's own secrets are never a
source: ``LETL_HOME`` (catalog, pseudonym key, object-store credentials), tier directories, the
catalog and key files wherever they are, and system trees such as /proc and /etc. A configured
root opens a protected tree only if it lies strictly inside it (the default landing zone is
inside ``LETL_HOME``), never the protected tree itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from letl.lake.access import check_read
from letl.lake.config import setting
from letl.lake.errors import AccessDenied, InvalidInput, NotFound
from letl.lake.uri import SCHEME, GrosURIError, parse, resolve

if TYPE_CHECKING:
    from letl.lake.catalog import Version
    from letl.lake.lake import Lake

SOURCE_ROOTS_ENV = "LETL_SOURCE_ROOTS"
SOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:/[A-Za-z0-9][A-Za-z0-9_-]*){2}")
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/etc", "/run", "/boot", "/root")
ACCESS_KIND, REFUSED_KIND = "api", "api-refused"
OUTSIDE = ("source_uri is not a registered source: send a file inside the landing zone (LETL_LANDING) or a "
           f"{SOURCE_ROOTS_ENV} directory, or a lake version as gros://...; server files, LETL_HOME, /etc and "
           "/proc never are")


@dataclass(frozen=True)
class Source:
    path: Path  # a resolved local file, safe to copy
    version: "Version | None" = None  # the lake version, for a gros:// source


def landing_root() -> Path:
    """The landing zone: LETL_LANDING, else LETL_HOME/landing. LandingZone.root() uses this too, so the
    API (which imports no Dagster) and the pipelines agree on it."""
    landing = setting("LETL_LANDING")
    return landing.absolute() if landing else setting("LETL_HOME").absolute() / "landing"


def source_roots() -> list[Path]:
    # Read per request, like the API token: adding a root needs no restart.
    extra = setting(SOURCE_ROOTS_ENV)
    return [_real(p) for p in (landing_root(), *extra)]


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(path))


def _protected(lake: "Lake") -> list[Path]:
    trees = [Path(t) for t in SYSTEM_TREES] + [lake.config.home]
    trees += [t.spec.path for t in lake.tiers.values() if t.spec.path is not None]
    url = make_url(lake.config.catalog_url)
    if url.get_backend_name() == "sqlite" and url.database:
        trees += [Path(url.database + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    trees += [path for path in (setting("LETL_PSEUDONYM_KEY_FILE"), setting("LETL_TIERS_FILE")) if path]
    return [_real(t) for t in trees]


def _inside(path: Path, tree: Path) -> bool:
    return path == tree or tree in path.parents


def _local_file(lake: "Lake", text: str, repeat: bool) -> Source:
    if "\x00" in text:
        raise InvalidInput("source_uri holds a NUL byte")
    path = _real(text)
    roots = [r for r in source_roots() if _inside(path, r)]
    for tree in _protected(lake):
        if _inside(path, tree):
            roots = [r for r in roots if r != tree and _inside(r, tree)]
    if not roots:
        raise AccessDenied(OUTSIDE)
    if not repeat and not path.is_file():
        raise NotFound("source_uri: no such file in the registered sources")
    return Source(path)


def _lake_version(lake: "Lake", text: str, user: str) -> Source:
    try:
        ref = parse(text)
    except GrosURIError:
        # The parser's message quotes the URI; an API answer must not repeat what was sent.
        raise InvalidInput("source_uri is not a gros:// URI the strict parser accepts: "
                           "gros://{repo}[/{branch}][:{tag}][?partition=P], no '::' or '..', '%' only escaping P") from None
    try:
        versions = resolve(lake, ref)
    except LookupError as exc:
        raise NotFound(f"source_uri: {exc}") from None
    if ref.all_partitions or len(versions) != 1 or (ref.partition is None and versions[0].partition):
        raise InvalidInput(f"source_uri selects {len(versions)} partition(s): name one version with ?partition=P")
    check_read(lake, ref, versions, user, REFUSED_KIND)
    version = versions[0]
    path = lake.local_path(version)
    lake.record_access(version, ACCESS_KIND)
    return Source(path, version)


def resolve_source(lake: "Lake", text: str, user: str, repeat: bool = False) -> Source:
    """The registered source text names, or the refusal: AccessDenied, NotFound or InvalidInput.

    A repeat of a recorded request is answered from its record and reads nothing, so its file
    may be gone since; it must still lie inside the registered sources."""
    if text.startswith(SCHEME):
        return _lake_version(lake, text, user)
    local = text.removeprefix("file://")
    if local.startswith("/"):
        return _local_file(lake, local, repeat)
    if text.startswith("file://"):
        raise InvalidInput("source_uri: a file:// URL names a file on this server: file:///absolute/path")
    if SOURCE_ID.fullmatch(text):
        raise NotFound("source_uri has the shape of a registered source id ({project}/{set}/{sample}), "
                       "but this server has no registered sources of that kind yet: send a landing-zone file "
                       "or a gros:// URI")
    raise InvalidInput("source_uri: use a file in the landing zone (an absolute path or file:// URL), "
                       "a gros:// URI, or a registered source id {project}/{set}/{sample}")
