"""LETL explorer: browse the lake's datasets and query them with DuckDB.

Run with `make explorer` (or `streamlit run explorer/app.py`) after `make run`.
"""

import streamlit as st

from explorer.auth import viewer


def main() -> None:
    st.set_page_config(page_title="LETL explorer", page_icon=":material/database:", layout="wide")
    st.session_state["viewer"] = viewer()
    pages = [
        st.Page("app_pages/datasets.py", title="Datasets", icon=":material/dataset:", default=True),
        st.Page("app_pages/builder.py", title="Query builder", icon=":material/tune:", url_path="query"),
        st.Page("app_pages/predefined.py", title="Predefined queries", icon=":material/bookmarks:", url_path="predefined"),
        st.Page("app_pages/sql.py", title="SQL", icon=":material/code:", url_path="sql"),
    ]
    with st.sidebar:
        who = st.session_state["viewer"]
        st.caption(f"Signed in as **{who.user}** ({who.role})")
    st.navigation(pages).run()


# Streamlit runs this file as __main__; the SQL worker, a spawned process, imports it again as
# __mp_main__, outside any session, where it must not draw the app (with a password set, there is
# no viewer there and the worker died before it answered).
if __name__ == "__main__":
    main()
