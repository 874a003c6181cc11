"""Hostile and unauthorised gros:// reads: fsspec chaining, out-of-range tags, restricted datasets.

Each case was reproduced on the code before the fix: a chained URL returned the whole dataset,
`:9999-12-31` raised OverflowError, and any user read the restricted rejects.
"""

import fsspec
import pandas as pd
import pytest
import sqlalchemy as sa
from test_gros_fs import run

from letl.gros.fs import GrosFileSystem
from letl.lake.catalog import access_log, query_log
from letl.lake.errors import AccessDenied
from letl.lake.lake import current_user
from letl.lake.uri import GrosURIError

P1, P2 = "2024-03-01", "2024-04-01"
DEID = {"dataset": {"access": "deidentified"}}
RESTRICTED = {"dataset": {"access": "restricted"}}


@pytest.fixture
def shelf(lake, monkeypatch):
    """labs/open: de-identified; labs/lab_results_rejects: restricted; labs/mixed: one de-identified
    partition in a restricted dataset; labs/undeclared: no level at all."""
    monkeypatch.delenv("LETL_STEWARDS", raising=False)
    lake.write_version("labs/open", pd.DataFrame({"a": [1]}), partition=P1, metadata=DEID)
    lake.write_version("labs/open", pd.DataFrame({"a": [2]}), partition=P2, metadata=DEID)
    lake.write_version("labs/lab_results_rejects", pd.DataFrame({"raw": ["MRN-1"]}), partition=P1, metadata=RESTRICTED)
    lake.write_version("labs/mixed", pd.DataFrame({"m": [1]}), partition=P1, metadata=RESTRICTED)
    lake.write_version("labs/mixed", pd.DataFrame({"m": [2]}), partition=P2, metadata=DEID)
    lake.write_version("labs/undeclared", pd.DataFrame({"u": [1]}))
    return lake


def fs() -> GrosFileSystem:
    return GrosFileSystem(skip_instance_cache=True)


def accesses(lake) -> list[dict]:
    with lake.catalog.engine.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(access_log).where(access_log.c.kind == "gros"))]


def refusals(lake) -> list[dict]:
    with lake.catalog.engine.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(query_log).where(query_log.c.kind == "gros-refused"))]


# --- the strict parser is the only door -----------------------------------------------------------


@pytest.mark.parametrize("uri", [
    f"gros://labs.open::latest?partition={P1}",   # fsspec chain: gros saw 'labs.open', every partition
    "gros://labs.open::file:///etc/passwd",
    "gros::labs.open",
])
def test_chained_urls_are_refused_by_every_fsspec_entry(shelf, uri):
    attempts = [lambda: fsspec.core.url_to_fs(uri), lambda: fsspec.open(uri, "rb").open(),
                lambda: fsspec.open_files(uri)]
    if "://" in uri:  # pandas takes a URL without '://' for a local file name and never asks fsspec
        attempts.append(lambda: pd.read_parquet(uri))
    for attempt in attempts:
        with pytest.raises(GrosURIError, match=r"chaining \('::'\) is not allowed"):
            attempt()
    with pytest.raises(GrosURIError, match="chaining"):
        fs().open(uri, "rb")
    assert accesses(shelf) == []


def test_chained_url_is_refused_in_a_notebook(shelf):
    out = run(f"""
        try:
            df = pd.read_parquet("gros://labs.open::latest?partition={P1}")
            print(json.dumps({{"rows": len(df)}}))
        except Exception as exc:
            print(json.dumps({{"error": f"{{type(exc).__name__}}: {{exc}}"}}))
    """)
    assert out.get("error", "").startswith("GrosURIError: invalid gros URI"), out
    assert accesses(shelf) == []


@pytest.mark.parametrize("tag, why", [("9999-12-31", "out of range"), ("0000-01-01", "not a real date"),
                                      ("9" * 19, "more than 18 digits"), ("-" + "9" * 4000, "longer than")])
def test_malformed_tags_are_the_parsers_error_never_overflow(shelf, tag, why):
    uri = f"gros://labs.open:{tag}?partition={P1}"
    for attempt in (lambda: pd.read_parquet(uri), lambda: fs().info(uri), lambda: fs().open(uri, "rb")):
        with pytest.raises(GrosURIError, match=why):
            attempt()


@pytest.mark.parametrize("path", ["gros://labs.open//", "labs.open///", "gros://labs.open/main//",
                                  "gros://../../etc/_metadata", "gros://labs.open:99999999999999999999/_metadata"])
def test_only_one_trailing_slash_is_forgiven(shelf, path):
    for attempt in (lambda: fs().info(path), lambda: fs().ls(path), lambda: fs().exists(path)):
        with pytest.raises(GrosURIError):
            attempt()
    assert fs().info("gros://labs.open/")["type"] == "directory"


# --- access levels --------------------------------------------------------------------------------


def test_restricted_read_without_steward_is_refused_and_audited(shelf):
    uri = f"gros://labs.lab_results_rejects:latest?partition={P1}"
    with pytest.raises(AccessDenied) as info:
        pd.read_parquet(uri)
    message = str(info.value)
    assert isinstance(info.value, PermissionError) and "\n" not in message
    assert "LETL_STEWARDS" in message and current_user() in message
    for attempt in (lambda: fs().open(uri, "rb"), lambda: fs().ls("gros://labs.lab_results_rejects"),
                    lambda: fs().info(uri)):
        with pytest.raises(AccessDenied):
            attempt()
    assert accesses(shelf) == []
    audited = refusals(shelf)
    assert len(audited) == 4 and all(r["user"] == current_user() and r["host"] for r in audited)
    assert all("labs.lab_results_rejects" in r["detail"] for r in audited)


def test_steward_reads_restricted_and_the_read_is_audited(shelf, monkeypatch):
    monkeypatch.setenv("LETL_STEWARDS", f"someone-else, {current_user()}")
    df = pd.read_parquet(f"gros://labs.lab_results_rejects:latest?partition={P1}")
    assert df["raw"].tolist() == ["MRN-1"]
    assert accesses(shelf) and {a["user"] for a in accesses(shelf)} == {current_user()}
    assert refusals(shelf) == []


def test_steward_list_is_exact_user_names(shelf, monkeypatch):
    monkeypatch.setenv("LETL_STEWARDS", f"{current_user()}x,{current_user().upper()}X")
    with pytest.raises(AccessDenied):
        pd.read_parquet("gros://labs.lab_results_rejects")


def test_deidentified_is_open_and_undeclared_is_restricted(shelf):
    assert sorted(pd.read_parquet("gros://labs.open")["a"].tolist()) == [1, 2]
    with pytest.raises(AccessDenied):
        pd.read_parquet("gros://labs.undeclared")


def test_a_dataset_is_as_strict_as_its_strictest_version(shelf, lake):
    # P2 alone declares itself de-identified; the dataset still holds a restricted partition.
    with pytest.raises(AccessDenied):
        pd.read_parquet(f"gros://labs.mixed:latest?partition={P2}")
    # A dataset now de-identified does not open a restricted version pinned from its past.
    lake.write_version("labs/open", pd.DataFrame({"a": [3]}), partition=P1, metadata=RESTRICTED)
    lake.write_version("labs/open", pd.DataFrame({"a": [4]}), partition=P1, metadata=DEID)
    assert pd.read_parquet(f"gros://labs.open:latest?partition={P1}")["a"].tolist() == [4]
    with pytest.raises(AccessDenied):
        pd.read_parquet(f"gros://labs.open:1?partition={P1}")


def test_a_cache_wrapped_around_gros_still_parses_checks_and_audits(shelf, monkeypatch):
    # fsspec builds the outer layer; gros, as its target, sees an ordinary path.
    with pytest.raises(AccessDenied):
        with fsspec.open(f"simplecache::gros://labs.lab_results_rejects:latest?partition={P1}", "rb") as f:
            f.read()
    assert len(refusals(shelf)) == 1
    with fsspec.open(f"simplecache::gros://labs.open:latest?partition={P1}", "rb") as f:
        assert f.read(4) == b"PAR1"
    assert len(accesses(shelf)) == 1
    with pytest.raises(GrosURIError):
        fsspec.open(f"simplecache::gros://labs.open:9999-12-31?partition={P1}", "rb").open()
