"""`letl lineage`: the version graph around one gros:// version."""

import json
import os
import subprocess
import sys

import pandas as pd


def letl(*args):
    return subprocess.run([sys.executable, "-m", "letl.cli.main", *args], env=dict(os.environ),
                          capture_output=True, text=True)


def test_walks_upstream_and_downstream_by_depth(lake):
    a = lake.write_version("chain/a", pd.DataFrame({"v": [1]}))
    b = lake.write_version("chain/b", pd.DataFrame({"v": [2]}), upstream_ids=[a.version_id])
    c = lake.write_version("chain/c", pd.DataFrame({"v": [3]}), upstream_ids=[b.version_id])
    up = json.loads(letl("lineage", "gros://chain.c", "--upstream", "--json").stdout)
    assert up["version"] == c.version_id
    assert [(e["depth"], e["to"]) for e in up["edges"]] == [(1, b.version_id), (2, a.version_id)]
    down = json.loads(letl("lineage", "gros://chain.a:latest", "--downstream", "--json").stdout)
    assert [(e["depth"], e["asset"]) for e in down["edges"]] == [(1, "chain/b"), (2, "chain/c")]
    both = json.loads(letl("lineage", "gros://chain.b", "--json", "--depth", "1").stdout)
    assert {(e["direction"], e["to"]) for e in both["edges"]} == {("upstream", a.version_id), ("downstream", c.version_id)}
    text = letl("lineage", "gros://chain.c").stdout
    assert "<- chain/b" in text and "<- chain/a" in text


def test_a_bad_uri_is_invalid_input_and_an_unknown_one_not_found(lake):
    bad = letl("lineage", "gros://chain..c")
    assert bad.returncode == 2 and "invalid gros URI" in bad.stderr
    unknown = letl("lineage", "gros://no.such")
    assert unknown.returncode == 4 and "error: unknown repo 'no.such'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
