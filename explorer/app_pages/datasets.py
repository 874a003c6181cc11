"""Datasets: what is in the lake, where each version sits, how fresh it is and where it came from."""

import pandas as pd
import streamlit as st

from explorer import state
from letl.lake.config import format_size
from letl.query.datasets import at_tag, history, lineage
from letl.query.query_builder import Query
from letl.query.share import to_url_params

viewer = st.session_state["viewer"]
found = state.datasets(viewer.role)
st.title("Datasets")
if not found:
    st.info("No datasets visible to you yet. Run `make run` to build the sample lab data.")
    st.stop()

st.dataframe(
    pd.DataFrame([{
        "dataset": d.key, "view": d.view, "description": d.description, "owners": ", ".join(d.owners) or d.group,
        "access": d.access, "partitions": len(d.partitions) or "-", "rows": d.rows, "size": format_size(d.bytes),
        "tiers": ", ".join(f"{t} ({n})" for t, n in sorted(d.tiers.items())),
        "latest version": max(d.latest, key=lambda v: v.created_at).version_id, "freshness": d.freshness(),
    } for d in found]),
    width="stretch", hide_index=True,
)

names = [d.key for d in found]
# A link fills the widgets once (dataset=...&version=<tag>); afterwards the widgets own the state and write
# it back. Only these two keys: a builder link (q, tag) opened in the app's first run must survive this page.
link = (st.query_params.get("dataset"), st.query_params.get("version"))
if link != st.session_state.get("ds_link"):
    st.session_state["ds_link"] = link
    if link[0] in names:
        st.session_state["ds_pick"] = link[0]
    elif link[0] is not None:
        st.warning(f"The dataset in this link is not one you can see: {link[0]}")
    if link[1]:
        st.session_state["ds_link_tag"] = link[1]
chosen = st.selectbox("Dataset", names, key="ds_pick")
dataset = next(d for d in found if d.key == chosen)
lake = state.lake()

st.subheader(dataset.key)
st.write(dataset.description or "_No description._")
cols = st.columns(4)
cols[0].metric("Rows (latest)", f"{dataset.rows:,}")
cols[1].metric("Size (latest)", format_size(dataset.bytes))
cols[2].metric("Partitions", len(dataset.partitions) or "unpartitioned")
cols[3].metric("Access", dataset.access)
st.caption(f"Owners: {', '.join(dataset.owners) or '-'} · group {dataset.group or '-'} · {dataset.freshness()} · "
           f"query it as `{dataset.view}` · read it as `{dataset.uri}`")

ups, downs = lineage(lake, dataset)
left, right = st.columns(2)
left.markdown("**Built from**\n\n" + ("\n".join(f"- `{u}`" for u in ups) or "_nothing in the lake (a source)_"))
right.markdown("**Feeds**\n\n" + ("\n".join(f"- `{d}`" for d in downs) or "_no downstream datasets yet_"))

st.markdown("**Versions** (every version stays readable through its `gros://` URI)")
rows = history(lake, dataset)
latest_ids = {v.version_id for v in dataset.latest}
st.dataframe(
    pd.DataFrame([{
        "gros uri": uri, "partition": v.partition or "-", "created": v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "tier": v.tier, "rows": v.rows, "size": format_size(v.bytes), "latest": v.version_id in latest_ids,
        "version id": v.version_id, "sha256": v.sha256[:16],
    } for v, uri in rows]),
    width="stretch", hide_index=True,
)

st.markdown("**Time travel**: pick a `gros://` tag to see, and query, the dataset as it was.")
dates = sorted({v.created_at.date().isoformat() for v, _ in rows}, reverse=True)
options = ["latest", *dates, "other…"]
if "ds_link_tag" in st.session_state:
    linked = st.session_state.pop("ds_link_tag")
    st.session_state["ds_tag_pick"] = linked if linked in options else "other…"
    if linked not in options:
        st.session_state["ds_tag"] = linked
left, right = st.columns(2)
picked = left.selectbox("Tag", options, key="ds_tag_pick",
                        help="A date selects the last version created on or before it, in every partition.")
tag = right.text_input("Other tag: a date (YYYY-MM-DD) or an index (0 = first, -1 = newest)", key="ds_tag") \
    if picked == "other…" else picked
st.query_params["dataset"] = chosen
if tag and tag != "latest":
    st.query_params["version"] = tag
elif "version" in st.query_params:
    del st.query_params["version"]
st.session_state["ds_link"] = (chosen, st.query_params.get("version"))
if tag:
    try:
        chosen_versions = at_tag(lake, dataset, tag)
    except (LookupError, ValueError) as e:
        st.error(f"Tag {tag!r}: {e}")
        st.stop()
    st.dataframe(pd.DataFrame([{
        "partition": v.partition or "-", "version id": v.version_id, "created": v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "tier": v.tier, "rows": v.rows,
    } for v in chosen_versions]), width="stretch", hide_index=True)
    st.caption(f"As `{dataset.uri}/{dataset.latest[0].branch}:{tag}`")
    if st.button("Open in the query builder", key="ds_open"):
        st.switch_page("app_pages/builder.py", query_params={**to_url_params(Query(dataset=dataset.view, limit=1000)),
                                                         **({"tag": tag} if tag != "latest" else {})})
