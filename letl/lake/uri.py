"""gros:// URIs: one strict parser, its inverse, and resolution against the catalog.

    gros://{repo}[/{branch}][:{tag}][?partition=P]

The repo is the asset key with ``.`` between parts (``labs.lab_results`` is the asset key
``labs/lab_results``); the branch defaults to ``main``. The tag is empty (the latest version,
read as a real-time dependency), ``latest`` (the latest version, a pinned read),
``YYYY-mm-dd`` (the last version created on or before the end of that day, UTC) or a signed
integer index into the versions, oldest first. The only query parameter is ``partition``;
``partition=*`` selects every partition. A partition name holding '/' is written percent-encoded
(``?partition=x%2Fy``), the one place a ``%``-escape is allowed: the lake's names are
'/'-separated parts of ``[A-Za-z0-9_.=-]``, and the decoded name must be one.

The parser is a whitelist: every field must match its pattern exactly, and anything it does
not know (``%``-escapes outside the partition, ``..``, empty or absolute segments, other query parameters) is an
error, so a URI can never name a storage key outside its asset. fsspec URL chaining (``::``)
is refused here too: fsspec splits a chained URL before any filesystem sees it, so the gros
filesystem also refuses to be built as one link of a chain (see letl/gros/fs.py).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Union

from letl.lake.errors import InvalidInput, NotFound
from letl.lake.names import asset_key_of, repo_of

if TYPE_CHECKING:
    from letl.lake.catalog import Version
    from letl.lake.lake import Lake

SCHEME = "gros://"
MAX_LENGTH = 512
DEFAULT_BRANCH = "main"
ALL_PARTITIONS = "*"

REPO_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# A partition is one storage-key part (see storage.contract.validate_key): no "/", no "..".
PARTITION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=-]*")
# The lake also takes a partition of several key parts ("x/y"); only written percent-encoded in a URI.
PARTITION_NAME = re.compile(rf"{PARTITION.pattern}(?:/{PARTITION.pattern})*")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
DATE_TAG = re.compile(r"\d{4}-\d{2}-\d{2}")
INDEX_DIGITS = 18
INDEX_TAG = re.compile(r"[+-]?\d+")
# A date tag selects versions created before the end of its day, so that day needs a successor.
LAST_DATE = date.max - timedelta(days=1)

TAG_KINDS = ("realtime", "latest", "date", "index")

TagValue = Union[None, date, int]


class GrosURIError(InvalidInput):
    """A malformed or escaping gros:// URI (a ValueError, like every InvalidInput)."""


@dataclass(frozen=True)
class GrosRef:
    repo: str
    branch: str = DEFAULT_BRANCH
    tag_kind: str = "realtime"
    tag: TagValue = None
    partition: str | None = None

    @property
    def asset_key(self) -> str:
        return asset_key_of(self.repo)

    @property
    def realtime(self) -> bool:
        """An untagged read: the reader depends on this upstream and reruns when it changes."""
        return self.tag_kind == "realtime"

    @property
    def all_partitions(self) -> bool:
        return self.partition == ALL_PARTITIONS

    def with_partition(self, partition: str | None) -> "GrosRef":
        return GrosRef(self.repo, self.branch, self.tag_kind, self.tag, partition)

    def __str__(self) -> str:
        return format_uri(self)


def invalid(uri: str, why: str) -> GrosURIError:
    """The parser's error for uri, naming what is wrong and the shape it expects."""
    shown = uri if len(uri) <= 80 else uri[:77] + "..."
    return GrosURIError(
        f"invalid gros URI {shown!r}: {why} "
        "(expected gros://{repo}[/{branch}][:{tag}][?partition=P], e.g. gros://labs.lab_results/main:latest?partition=2024-03-01)"
    )


def _check_name(uri: str, value: str, pattern: re.Pattern[str], what: str) -> None:
    if not value:
        raise invalid(uri, f"empty {what}")
    if ".." in value:
        raise invalid(uri, f"{what} {value!r} contains '..'")
    if not pattern.fullmatch(value):
        raise invalid(uri, f"{what} {value!r} must match {pattern.pattern}")


def parse(uri: str) -> GrosRef:
    """Parse a gros:// URI, or raise GrosURIError saying what is wrong."""
    if not isinstance(uri, str):
        raise GrosURIError(f"a gros URI must be a string, not {type(uri).__name__}")
    if len(uri) > MAX_LENGTH:
        raise invalid(uri, f"longer than {MAX_LENGTH} characters")
    if not uri.startswith(SCHEME):
        raise invalid(uri, "the scheme must be gros://")
    if "%" in uri.partition("?")[0]:
        raise invalid(uri, "percent-encoded characters are not allowed (only in the ?partition= value)")
    if not uri.isascii() or any(c.isspace() or not c.isprintable() for c in uri):
        raise invalid(uri, "only printable ASCII without spaces is allowed")
    if "#" in uri:
        raise invalid(uri, "fragments ('#') are not allowed")
    if "::" in uri:
        raise invalid(uri, "fsspec URL chaining ('::') is not allowed")
    rest = uri[len(SCHEME):]
    path, has_query, query = rest.partition("?")
    partition = _parse_query(uri, query) if has_query else None

    location, has_tag, tag_text = path.partition(":")
    if has_tag and ":" in tag_text:
        raise invalid(uri, "more than one ':' tag separator")
    if not location:
        raise invalid(uri, "empty repo")
    if location.startswith("/"):
        raise invalid(uri, "absolute paths are not allowed (the repo comes right after gros://)")
    segments = location.split("/")
    if any(s == "" for s in segments):
        raise invalid(uri, "empty path segment ('//' or a trailing '/')")
    if len(segments) > 2:
        raise invalid(uri, "too many '/' segments: only {repo}/{branch} is allowed")
    repo = segments[0]
    if repo.startswith(".") or repo.endswith(".") or ".." in repo:
        raise invalid(uri, f"repo {repo!r} has an empty part ('..' or a leading/trailing '.')")
    for part in repo.split("."):
        if not REPO_PART.fullmatch(part):
            raise invalid(uri, f"repo part {part!r} must match {REPO_PART.pattern}")
    branch = DEFAULT_BRANCH
    if len(segments) == 2:
        branch = segments[1]
        _check_name(uri, branch, BRANCH, "branch")

    tag_kind, tag = _parse_tag(uri, tag_text) if has_tag else ("realtime", None)
    return GrosRef(repo=repo, branch=branch, tag_kind=tag_kind, tag=tag, partition=partition)


def _parse_query(uri: str, query: str) -> str:
    if not query:
        raise invalid(uri, "empty query after '?'")
    params = query.split("&")
    partition = None
    for param in params:
        key, has_eq, value = param.partition("=")
        if key != "partition":
            raise invalid(uri, f"unknown query parameter {key!r} (only 'partition' is allowed)")
        if not has_eq or not value:
            raise invalid(uri, "empty partition")
        if partition is not None:
            raise invalid(uri, "partition given more than once")
        if value != ALL_PARTITIONS:
            value = checked_partition(uri, value)
        partition = value
    assert partition is not None
    return partition


def checked_partition(uri: str, value: str) -> str:
    """The partition an encoded segment names, refused like any URI's partition (``..``, NUL, any
    character outside the names the lake takes) whatever escapes spelled it."""
    if "/" in value:
        raise invalid(uri, f"partition {value!r} contains '/': write it percent-encoded (%2F)")
    if _ESCAPE.search(value):
        raise invalid(uri, f"partition {value!r} has a '%' that is not a %XX escape")
    name = decode_partition(value)
    _check_name(uri, name, PARTITION_NAME, "partition")
    return name


PARTITION_COLUMN = "partition_key"  # what gros:// Hive folders and the explorer's views call a partition


def hive_segment(partition: str) -> str:
    """The Hive directory name of a partition: ``partition_key=<encoded name>``."""
    return f"{PARTITION_COLUMN}={encode_partition(partition)}"


def encode_partition(partition: str) -> str:
    """A partition name as one URI or Hive path segment ('/' as %2F, '=' as %3D, '%' as %25): the
    encoding pyarrow, DuckDB, pandas and polars decode in a ``key=value`` directory name."""
    return urllib.parse.quote(partition, safe="")


def decode_partition(text: str) -> str:
    return urllib.parse.unquote(text, errors="replace")


def _parse_tag(uri: str, text: str) -> tuple[str, TagValue]:
    if text == "":
        return "realtime", None
    if text == "latest":
        return "latest", None
    if DATE_TAG.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise invalid(uri, f"tag {text!r} is not a real date") from None
        if day > LAST_DATE:
            raise invalid(uri, f"date tag {text!r} is out of range (the last date tag is {LAST_DATE.isoformat()})")
        return "date", day
    if INDEX_TAG.fullmatch(text):
        if len(text.lstrip("+-")) > INDEX_DIGITS:
            raise invalid(uri, f"index tag has more than {INDEX_DIGITS} digits")
        return "index", int(text)
    raise invalid(uri, f"bad tag {text!r}: use nothing, 'latest', YYYY-mm-dd or a signed integer index")


def format_uri(
    ref_or_repo: GrosRef | str,
    branch: str = DEFAULT_BRANCH,
    tag_kind: str = "realtime",
    tag: TagValue = None,
    partition: str | None = None,
) -> str:
    """The URI of a ref (or of its fields): parse(format_uri(ref)) == ref."""
    if isinstance(ref_or_repo, GrosRef):
        ref = ref_or_repo
    else:
        ref = GrosRef(ref_or_repo, branch, tag_kind, tag, partition)
    if ref.tag_kind == "realtime":
        tag_text = ""
    elif ref.tag_kind == "latest":
        tag_text = ":latest"
    elif ref.tag_kind == "date":
        if not isinstance(ref.tag, date):
            raise ValueError(f"date tag needs a date, not {ref.tag!r}")
        tag_text = f":{ref.tag.isoformat()}"
    elif ref.tag_kind == "index":
        if not isinstance(ref.tag, int) or isinstance(ref.tag, bool):
            raise ValueError(f"index tag needs an int, not {ref.tag!r}")
        tag_text = f":{ref.tag}"
    else:
        raise ValueError(f"unknown tag kind {ref.tag_kind!r}; use one of {TAG_KINDS}")
    shown = ref.partition if ref.partition in (None, ALL_PARTITIONS) else encode_partition(ref.partition)
    query = f"?partition={shown}" if ref.partition is not None else ""
    return f"{SCHEME}{ref.repo}/{ref.branch}{tag_text}{query}"


def dataset_uri(asset_key: str) -> str:
    """The short address of a dataset (its latest versions on the default branch), as shown to users."""
    return f"{SCHEME}{repo_of(asset_key)}"


# --- resolution ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Resolution:
    """What one catalog query says about a ref: the versions it serves (one per partition, oldest
    partition first) and the latest version of every partition on its branch, which the access
    check needs (a dataset is as strict as the strictest of them)."""

    ref: GrosRef
    served: tuple["Version", ...]
    current: tuple["Version", ...]


def resolve_read(lake: "Lake", ref: GrosRef) -> Resolution:
    """Resolve ref with one catalog query (the branch's versions of the asset). Raises NotFound (a LookupError)
    for an unknown repo, an unknown branch, an unknown partition or a tag that matches nothing;
    only those failures query the catalog again, to say what does exist."""
    catalog = lake.catalog
    on_branch = catalog.list_versions(asset_key=ref.asset_key, branch=ref.branch)
    if not on_branch:
        _explain_missing(lake, ref)
    by_partition: dict[str, list[Version]] = {}
    for version in on_branch:  # list_versions orders by partition, created_at, version_id
        by_partition.setdefault(version.partition, []).append(version)
    current = tuple(_select(by_partition[p], GrosRef(ref.repo, ref.branch)) for p in sorted(by_partition))
    if ref.partition is not None and not ref.all_partitions:
        if ref.partition not in by_partition:
            shown = sorted(p or "(unpartitioned)" for p in by_partition)
            raise NotFound(
                f"repo {ref.repo!r} on branch {ref.branch!r} has no partition {ref.partition!r}; "
                f"partitions: {_preview(shown)}"
            )
        by_partition = {ref.partition: by_partition[ref.partition]}
    selected = []
    for partition in sorted(by_partition):
        chosen = _select(by_partition[partition], ref)
        if chosen is not None:
            selected.append(chosen)
    if not selected:
        where = f" partition {ref.partition!r}" if ref.partition and not ref.all_partitions else ""
        raise NotFound(f"no version of {ref.repo!r} on branch {ref.branch!r}{where} matches tag {_tag_text(ref)}")
    return Resolution(ref, tuple(selected), current)


def resolve(lake: "Lake", ref: GrosRef) -> list["Version"]:
    """The versions a ref selects, one per partition (oldest partition first).

    Without a partition (or with ``partition=*``), every partition of the asset on that
    branch; an unpartitioned asset has exactly one. Raises NotFound for an unknown repo,
    an unknown branch or a tag that matches nothing.
    """
    return list(resolve_read(lake, ref).served)


def _explain_missing(lake: "Lake", ref: GrosRef) -> None:
    catalog = lake.catalog
    on_asset = catalog.list_versions(asset_key=ref.asset_key)
    if not on_asset:
        known = sorted({repo_of(v.asset_key) for v in catalog.list_versions()})
        raise NotFound(
            f"unknown repo {ref.repo!r} (asset key {ref.asset_key!r}); known repos: {', '.join(known) or '(none)'}"
        )
    branches = sorted({v.branch for v in on_asset})
    raise NotFound(f"repo {ref.repo!r} has no branch {ref.branch!r}; its branches: {', '.join(branches)}")


def _select(history: list["Version"], ref: GrosRef) -> "Version | None":
    """history is one partition's versions, oldest first."""
    ordered = sorted(history, key=lambda v: (v.created_at, v.version_id))
    if ref.tag_kind in ("realtime", "latest"):
        return ordered[-1]
    if ref.tag_kind == "date":
        assert isinstance(ref.tag, date)
        end_of_day = datetime.combine(ref.tag + timedelta(days=1), time(), tzinfo=timezone.utc)
        before = [v for v in ordered if _aware(v.created_at) < end_of_day]
        return before[-1] if before else None
    if ref.tag_kind == "index":
        assert isinstance(ref.tag, int)
        if -len(ordered) <= ref.tag < len(ordered):
            return ordered[ref.tag]
        return None
    raise ValueError(f"unknown tag kind {ref.tag_kind!r}")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _tag_text(ref: GrosRef) -> str:
    if ref.tag_kind == "realtime":
        return "(none)"
    if ref.tag_kind == "latest":
        return "'latest'"
    if ref.tag_kind == "date":
        return f"{ref.tag} (no version created on or before that day, UTC)"
    return f"{ref.tag} (index out of range)"


def _preview(items: list[str], limit: int = 10) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
