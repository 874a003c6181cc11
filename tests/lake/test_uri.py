"""gros:// URIs: the strict parser, its inverse, and resolution against a lake."""

from datetime import date, datetime, timezone

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from letl.lake.catalog import versions as versions_table
from letl.lake.errors import InvalidInput
from letl.lake.uri import (
    BRANCH,
    MAX_LENGTH,
    PARTITION,
    REPO_PART,
    GrosRef,
    GrosURIError,
    format_uri,
    parse,
    resolve,
)

# --- examples: every tag kind ---------------------------------------------------------------


def test_bare_repo_is_realtime_latest_on_main():
    ref = parse("gros://labs.lab_results")
    assert ref == GrosRef(repo="labs.lab_results", branch="main", tag_kind="realtime", tag=None, partition=None)
    assert ref.asset_key == "labs/lab_results"
    assert ref.realtime


def test_latest_tag_is_a_pinned_read():
    ref = parse("gros://labs.lab_results:latest")
    assert ref.tag_kind == "latest" and ref.tag is None
    assert not ref.realtime


def test_empty_tag_after_colon_is_realtime():
    assert parse("gros://labs.lab_results:").tag_kind == "realtime"


def test_branch_date_tag_and_partition():
    ref = parse("gros://labs.lab_results/feature.x-1:2024-03-05?partition=2024-03-01")
    assert ref.branch == "feature.x-1"
    assert ref.tag_kind == "date" and ref.tag == date(2024, 3, 5)
    assert ref.partition == "2024-03-01"
    assert not ref.realtime


@pytest.mark.parametrize("text, value", [("0", 0), ("-1", -1), ("+2", 2), ("17", 17), ("007", 7)])
def test_index_tags(text, value):
    ref = parse(f"gros://a.b/dev:{text}")
    assert (ref.tag_kind, ref.tag, ref.branch) == ("index", value, "dev")


def test_all_partitions():
    ref = parse("gros://labs.x?partition=*")
    assert ref.partition == "*" and ref.all_partitions


def test_single_part_repo():
    assert parse("gros://raw").asset_key == "raw"


def test_format_uri_examples():
    assert format_uri("labs.x") == "gros://labs.x/main"
    assert format_uri("labs.x", "dev", "index", -1, "2024-03-01") == "gros://labs.x/dev:-1?partition=2024-03-01"
    assert format_uri(GrosRef("a", tag_kind="date", tag=date(2024, 1, 2))) == "gros://a/main:2024-01-02"
    assert format_uri(GrosRef("a", tag_kind="latest")) == "gros://a/main:latest"
    with pytest.raises(ValueError):
        format_uri(GrosRef("a", tag_kind="index", tag="x"))


# --- examples: every error class ------------------------------------------------------------

BAD = {
    "wrong scheme": "s3://labs.x",
    "no scheme": "labs.x",
    "scheme case": "GROS://labs.x",
    "one slash": "gros:/labs.x",
    "empty": "gros://",
    "empty repo with tag": "gros://:latest",
    "absolute": "gros:///etc/passwd",
    "dotdot repo": "gros://..",
    "dotdot branch": "gros://labs.x/..",
    "dotdot branch inner": "gros://labs.x/a..b",
    "escape path": "gros://labs.x/../../etc",
    "empty segment": "gros://labs//x",
    "trailing slash": "gros://labs.x/",
    "three segments": "gros://labs/x/y",
    "leading dot": "gros://.labs",
    "trailing dot": "gros://labs.",
    "empty repo part": "gros://labs..x",
    "repo starts with dash": "gros://-labs",
    "bad repo char": "gros://labs.x$",
    "percent": "gros://labs%2Ex",
    "percent in partition": "gros://labs.x?partition=%2E%2E",
    "percent slash": "gros://labs.x/%2e%2e",
    "space": "gros://labs.x :latest",
    "newline": "gros://labs.x\n",
    "unicode": "gros://labś.x",
    "fragment": "gros://labs.x#frag",
    "unknown param": "gros://labs.x?format=csv",
    "extra param": "gros://labs.x?partition=a&b=1",
    "duplicate partition": "gros://labs.x?partition=a&partition=b",
    "empty partition": "gros://labs.x?partition=",
    "bare partition": "gros://labs.x?partition",
    "empty query": "gros://labs.x?",
    "dotdot partition": "gros://labs.x?partition=..",
    "slash partition": "gros://labs.x?partition=a/b",
    "bad month": "gros://labs.x:2024-13-01",
    "bad day": "gros://labs.x:2024-02-30",
    "float tag": "gros://labs.x:1.5",
    "double sign": "gros://labs.x:--1",
    "word tag": "gros://labs.x:newest",
    "two tags": "gros://labs.x:1:2",
    "short date": "gros://labs.x:2024-3-1",
    "branch starts with dot": "gros://labs.x/.hidden",
    "branch with colon only": "gros://labs.x/:latest",
    "too long": "gros://" + "a" * MAX_LENGTH,
    # fsspec would split these into a chain and hand gros only the part before '::'
    "fsspec chain": "gros://labs.x::latest?partition=2024-01-01",
    "chain to a file": "gros://labs.x::file:///etc/passwd",
    "chain without scheme slashes": "gros::labs.x",
    "last date": "gros://labs.x:9999-12-31",
    "year zero": "gros://labs.x:0000-01-01",
    "huge index": "gros://labs.x:" + "9" * 19,
    "huge negative index": "gros://labs.x:-" + "9" * 400,
}


@pytest.mark.parametrize("uri", BAD.values(), ids=BAD.keys())
def test_malformed_uris_raise_grosurierror(uri):
    with pytest.raises(GrosURIError) as info:
        parse(uri)
    assert "invalid gros URI" in str(info.value)
    assert "expected gros://{repo}" in str(info.value)


def test_error_names_the_problem():
    with pytest.raises(GrosURIError, match="unknown query parameter 'format'"):
        parse("gros://labs.x?format=csv")
    with pytest.raises(GrosURIError, match="percent-encoded"):
        parse("gros://labs%2Ex")
    with pytest.raises(GrosURIError, match="not a real date"):
        parse("gros://labs.x:2024-13-01")
    with pytest.raises(GrosURIError, match="'..'"):
        parse("gros://labs.x/a..b")
    with pytest.raises(GrosURIError, match=r"chaining \('::'\) is not allowed"):
        parse("gros://labs.x::latest?partition=2024-01-01")
    with pytest.raises(GrosURIError, match="out of range"):
        parse("gros://labs.x:9999-12-31")
    with pytest.raises(GrosURIError, match="not a real date"):
        parse("gros://labs.x:0000-01-01")
    with pytest.raises(GrosURIError, match="more than 18 digits"):
        parse("gros://labs.x:" + "1" * 19)


def test_grosurierror_is_a_valueerror_and_non_strings_are_refused():
    assert issubclass(GrosURIError, ValueError) and issubclass(GrosURIError, InvalidInput)
    with pytest.raises(GrosURIError):
        parse(None)  # type: ignore[arg-type]


def test_length_limit_is_inclusive():
    uri = "gros://" + "a" * (MAX_LENGTH - len("gros://"))
    assert len(uri) == MAX_LENGTH
    assert parse(uri).repo == "a" * (MAX_LENGTH - len("gros://"))


# --- properties -------------------------------------------------------------------------------

def _name(pattern):
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: ".." not in s and len(s) <= 40)


repos = st.lists(_name(REPO_PART), min_size=1, max_size=3).map(".".join)
tags = st.one_of(
    st.just(("realtime", None)),
    st.just(("latest", None)),
    st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 30)).map(lambda d: ("date", d)),
    st.integers(min_value=-(10**17), max_value=10**17).map(lambda i: ("index", i)),
)
refs = st.builds(
    lambda repo, branch, tag, partition: GrosRef(repo, branch, tag[0], tag[1], partition),
    repos,
    _name(BRANCH),
    tags,
    st.one_of(st.none(), st.just("*"), _name(PARTITION)),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(refs)
def test_parse_inverts_format(ref):
    uri = format_uri(ref)
    assume(len(uri) <= MAX_LENGTH)
    assert parse(uri) == ref


def _check_fields(ref: GrosRef) -> None:
    for text in (ref.repo, ref.branch, ref.partition or ""):
        assert ".." not in text and "/" not in text and "%" not in text
    assert all(REPO_PART.fullmatch(p) for p in ref.repo.split("."))
    assert BRANCH.fullmatch(ref.branch)
    assert ref.partition is None or ref.partition == "*" or PARTITION.fullmatch(ref.partition)
    assert ref.tag_kind in ("realtime", "latest", "date", "index")
    if ref.tag_kind == "date":
        assert isinstance(ref.tag, date)
    elif ref.tag_kind == "index":
        assert isinstance(ref.tag, int)
    else:
        assert ref.tag is None


uri_alphabet = st.sampled_from(list("ab_Z09.-/:?=&%*+# \\\x00é") + ["..", "partition=", "latest", "2024-02-29"])
uri_like = st.lists(uri_alphabet, max_size=30).map(lambda parts: "gros://" + "".join(parts))


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=80), uri_like, st.text(max_size=40).map(lambda s: "gros://" + s)))
def test_parse_accepts_only_safe_refs(text):
    try:
        ref = parse(text)
    except GrosURIError:
        return
    _check_fields(ref)
    assert parse(format_uri(ref)) == ref


# --- resolution -------------------------------------------------------------------------------


def _set_created(lake, version, when: datetime) -> None:
    with lake.catalog.engine.begin() as conn:
        conn.execute(
            versions_table.update()
            .where(versions_table.c.version_id == version.version_id)
            .values(created_at=when)
        )


def _at(day: int, hour: int = 12) -> datetime:
    return datetime(2024, 3, day, hour, tzinfo=timezone.utc)


@pytest.fixture
def history(lake):
    """labs/x: partitions p1 (versions on Mar 1, 2, 4 at noon; one at 23:59 on Mar 4) and p2 (Mar 3);
    labs/u unpartitioned (Mar 1, Mar 2); a branch 'dev' of labs/x with one version."""
    made = {"p1": [], "p2": [], "u": [], "dev": []}
    for n, when in enumerate([_at(1), _at(2), _at(4), _at(4, 23).replace(minute=59)]):
        v = lake.write_version("labs/x", pd.DataFrame({"n": [n]}), partition="p1")
        _set_created(lake, v, when)
        made["p1"].append(v.version_id)
    v = lake.write_version("labs/x", pd.DataFrame({"n": [10]}), partition="p2")
    _set_created(lake, v, _at(3))
    made["p2"].append(v.version_id)
    for n, when in enumerate([_at(1), _at(2)]):
        v = lake.write_version("labs/u", pd.DataFrame({"u": [n]}))
        _set_created(lake, v, when)
        made["u"].append(v.version_id)
    v = lake.write_version("labs/x", pd.DataFrame({"n": [99]}), partition="p1", branch="dev")
    made["dev"].append(v.version_id)
    return made


def _ids(lake, uri):
    return [v.version_id for v in resolve(lake, parse(uri))]


def test_resolve_realtime_and_latest(lake, history):
    assert _ids(lake, "gros://labs.x?partition=p1") == [history["p1"][-1]]
    assert _ids(lake, "gros://labs.x:latest?partition=p1") == [history["p1"][-1]]
    assert _ids(lake, "gros://labs.u") == [history["u"][-1]]
    assert _ids(lake, "gros://labs.u:latest") == [history["u"][-1]]


def test_resolve_all_partitions(lake, history):
    expected = [history["p1"][-1], history["p2"][-1]]
    assert _ids(lake, "gros://labs.x") == expected
    assert _ids(lake, "gros://labs.x?partition=*") == expected
    assert [v.partition for v in resolve(lake, parse("gros://labs.x:latest"))] == ["p1", "p2"]


def test_resolve_date_is_end_of_day_utc(lake, history):
    p1 = history["p1"]
    assert _ids(lake, "gros://labs.x:2024-03-01?partition=p1") == [p1[0]]
    assert _ids(lake, "gros://labs.x:2024-03-03?partition=p1") == [p1[1]]
    assert _ids(lake, "gros://labs.x:2024-03-04?partition=p1") == [p1[3]]  # 23:59 counts
    assert _ids(lake, "gros://labs.x:2030-01-01?partition=p1") == [p1[3]]
    assert _ids(lake, "gros://labs.u:2024-03-01") == [history["u"][0]]


def test_resolve_date_across_partitions_skips_partitions_without_a_match(lake, history):
    assert _ids(lake, "gros://labs.x:2024-03-02") == [history["p1"][1]]
    assert _ids(lake, "gros://labs.x:2024-03-03") == [history["p1"][1], history["p2"][0]]


def test_resolve_index(lake, history):
    p1 = history["p1"]
    assert _ids(lake, "gros://labs.x:0?partition=p1") == [p1[0]]
    assert _ids(lake, "gros://labs.x:2?partition=p1") == [p1[2]]
    assert _ids(lake, "gros://labs.x:-1?partition=p1") == [p1[3]]
    assert _ids(lake, "gros://labs.x:-4?partition=p1") == [p1[0]]
    assert _ids(lake, "gros://labs.u:1") == [history["u"][1]]


def test_resolve_index_agrees_with_lake_uri(lake, history):
    for version_id in history["p1"] + history["u"]:
        version = lake.catalog.get(version_id)
        assert _ids(lake, lake.uri(version)) == [version_id]


def test_resolve_branch(lake, history):
    assert _ids(lake, "gros://labs.x/dev?partition=p1") == history["dev"]
    assert _ids(lake, "gros://labs.x/dev:0?partition=p1") == history["dev"]


def test_unknown_repo_names_known_repos(lake, history):
    with pytest.raises(LookupError, match=r"unknown repo 'labs\.nope'.*labs\.u, labs\.x"):
        resolve(lake, parse("gros://labs.nope"))


def test_unknown_branch_names_branches(lake, history):
    with pytest.raises(LookupError, match=r"no branch 'feature'.*dev, main"):
        resolve(lake, parse("gros://labs.x/feature"))


def test_unknown_partition(lake, history):
    with pytest.raises(LookupError, match=r"no partition 'p9'.*p1, p2"):
        resolve(lake, parse("gros://labs.x?partition=p9"))


@pytest.mark.parametrize(
    "uri",
    [
        "gros://labs.x:2024-02-29?partition=p1",
        "gros://labs.x:2024-02-29",
        "gros://labs.x:4?partition=p1",
        "gros://labs.x:-5?partition=p1",
        "gros://labs.u:2",
    ],
)
def test_tag_without_match(lake, history, uri):
    with pytest.raises(LookupError, match="matches tag"):
        resolve(lake, parse(uri))


def test_resolve_on_empty_lake(lake):
    with pytest.raises(LookupError, match=r"known repos: \(none\)"):
        resolve(lake, parse("gros://labs.x"))


def test_set_created_really_moved_the_clock(lake, history):
    """Guard for the fixture: the patched timestamps are what the catalog returns."""
    v = lake.catalog.get(history["p1"][0])
    assert v.created_at == _at(1)
    with lake.catalog.engine.begin() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(versions_table)).scalar_one()
    assert count == 8


def test_extreme_date_tags_resolve_or_refuse_without_overflow(lake, history):
    """The last and first days a date tag can name resolve normally (no OverflowError)."""
    assert _ids(lake, "gros://labs.x:9999-12-30?partition=p1") == [history["p1"][-1]]
    with pytest.raises(LookupError, match="matches tag"):
        resolve(lake, parse("gros://labs.x:0001-01-01?partition=p1"))
