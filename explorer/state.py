"""Streamlit-side caches: the lake, and one query service per (role, catalog state, pin)."""

import streamlit as st

from letl.lake.lake import Lake
from letl.query.datasets import Dataset, at_tag, load_datasets, visible
from letl.query.labels import Labels, for_explorer
from letl.query.service import Explorer, Settings
from letl.query.views import state_key


@st.cache_resource
def lake() -> Lake:
    return Lake.from_env()


def datasets(role: str) -> list[Dataset]:
    """Read on every rerun (one catalog query), so a new version shows up at once."""
    return visible(load_datasets(lake()), role)


@st.cache_resource(max_entries=8)
def _explorer(role: str, state: str, _found: list[Dataset], _pinned: dict | None) -> Explorer:
    return Explorer(lake(), role, Settings.from_env(), datasets=_found, pinned=_pinned)


def explorer(role: str, pin: tuple[str, str] | None = None, found: list[Dataset] | None = None) -> Explorer:
    """The service for the catalog as it is now; a new version or a move gives a new one.

    Keyed by the versions served (and their tiers), not by the tag text: "-1", "latest" and
    today's date share one service, and a pinned version that moves tier gets a fresh one.
    ``found`` saves a second catalog read when the page already holds this rerun's datasets.
    """
    found = datasets(role) if found is None else found
    pinned = None
    if pin:
        dataset = next(d for d in found if d.key == pin[0])
        pinned = {dataset.key: at_tag(lake(), dataset, pin[1])}
    served = [v for d in found for v in (pinned or {}).get(d.key, d.latest)]
    return _explorer(role, state_key(served), found, pinned)


def labels(ex: Explorer | None = None) -> Labels:
    """Test names and units for the viewer's data, read once per service (so once per catalog state)."""
    who = st.session_state["viewer"]
    return for_explorer(ex or explorer(who.role), who.user)
