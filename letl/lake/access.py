"""Who may read what: access levels, the steward identity, and the one refusal every face gives.

A version declares its level in ``metadata["dataset"]["access"]``; one that declares nothing is
restricted. A dataset is as strict as the strictest version it serves, so one writer declaring a
single partition de-identified cannot open the rest of a restricted dataset. Restricted data is
read only by stewards: the user names in ``LETL_STEWARDS`` (comma-separated), matched against
``current_user()``, the same identity the access log records.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Iterable, Sequence

from letl.lake.config import setting
from letl.lake.errors import AccessDenied
from letl.lake.uri import GrosRef, format_uri, resolve

if TYPE_CHECKING:
    from letl.lake.catalog import Version
    from letl.lake.lake import Lake

ACCESS_LEVELS = ("deidentified", "restricted")
STEWARDS_ENV = "LETL_STEWARDS"


def version_access(version: "Version") -> str:
    access = (version.metadata.get("dataset") or {}).get("access")
    return access if access in ACCESS_LEVELS else "restricted"


def strictest(versions: Iterable["Version"]) -> str:
    levels = {version_access(v) for v in versions}
    return "restricted" if "restricted" in levels or not levels else "deidentified"


def stewards() -> frozenset[str]:
    # Read per check, like the API token: granting or revoking needs no restart.
    return frozenset(setting(STEWARDS_ENV))


def dataset_access(lake: "Lake", ref: GrosRef, served: Sequence["Version"],
                   current: Sequence["Version"] | None = None) -> str:
    """The level of what a read serves: its versions and the latest of every partition of the dataset.
    ``current`` is that latest of every partition when the caller resolved it already (uri.resolve_read
    gets both in one catalog query); otherwise it is looked up here."""
    if current is None:
        current = resolve(lake, GrosRef(ref.repo, ref.branch, partition="*"))
    return strictest([*served, *current])


def check_read(lake: "Lake", ref: GrosRef, served: Sequence["Version"], user: str, refused_kind: str,
               current: Sequence["Version"] | None = None) -> None:
    """Raise AccessDenied unless user may read what ref serves; a refusal is audited as refused_kind."""
    if dataset_access(lake, ref, served, current) != "restricted" or user in stewards():
        return
    uri = format_uri(ref)
    lake.catalog.record_query_event(refused_kind, None, detail=f"restricted: {uri}", user=user,
                                    host=socket.gethostname())
    raise AccessDenied(f"{uri} is restricted (it may hold identifiers) and user {user!r} is not a steward: "
                       f"ask the lake's administrator to add {user!r} to {STEWARDS_ENV} (comma-separated user "
                       "names), or read a de-identified dataset")
