"""LETL, the lake library: versions, lineage and tiers under one catalog, and the faces that use them.

``lake`` (the catalog and the Lake facade), ``storage`` (the backends), ``gros`` (the gros:// fsspec
protocol), ``labs`` (the lab domain), ``query`` (the explorer's service) and ``devstore`` import no
Dagster, Streamlit or FastAPI, so that a notebook needs only the core install; ``cli`` loads Dagster
inside ``letl run`` only, and ``api`` is the FastAPI face. The Dagster code location is the separate
package ``letl_assets``, the Streamlit UI is ``explorer``. Nothing is imported here: the gros://
entry point and ``letl --help`` load only what they use.
"""
