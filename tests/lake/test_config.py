"""Lake configuration: sizes, tier defaults, environment overrides, the pmem fallback."""

import os
from pathlib import Path

import pytest

from letl.lake import config
from letl.lake.config import LakeConfig, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [("0", 0), ("512", 512), ("1KB", 1000), ("1KiB", 1024), ("1.5GiB", int(1.5 * 2**30)), (" 20 gb ", 20 * 10**9)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "1XB", "-5MB", "1e9"])
def test_parse_size_rejects_nonsense(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_defaults_rank_tiers_hot_to_cold(letl_env, monkeypatch):
    monkeypatch.delenv("LETL_TIER_PMEM_PATH")
    cfg = LakeConfig.resolve()
    assert [t.name for t in sorted(cfg.tiers, key=lambda t: t.rank)] == ["pmem", "ssd", "hdd"]
    tiers = {t.name: t for t in cfg.tiers}
    assert tiers["ssd"].path == letl_env["home"] / "tiers" / "ssd"
    assert tiers["hdd"].quota_bytes == 0
    assert cfg.branch == "main"
    assert cfg.catalog_url == f"sqlite:///{letl_env['home'] / 'catalog.sqlite'}"
    if os.access("/dev/shm", os.W_OK):
        assert tiers["pmem"].path.is_relative_to("/dev/shm")
        # Two lakes on one machine never share their hot tier.
        other = LakeConfig.resolve(home=str(letl_env["home"] / "other"))
        assert {t.name: t for t in other.tiers}["pmem"].path != tiers["pmem"].path


def test_environment_and_explicit_values_override_defaults(letl_env, monkeypatch, tmp_path):
    monkeypatch.setenv("LETL_BRANCH", "feature")
    monkeypatch.setenv("LETL_TIER_SSD_QUOTA", "2GiB")
    cfg = LakeConfig.resolve(tier_paths={"hdd": str(tmp_path / "cold")}, tier_quotas={"pmem": "10MB"})
    tiers = {t.name: t for t in cfg.tiers}
    assert cfg.branch == "feature"
    assert tiers["ssd"].quota_bytes == 2 * 2**30
    assert tiers["pmem"].quota_bytes == 10 * 10**6
    assert tiers["hdd"].path == tmp_path / "cold"
    assert tiers["pmem"].path == letl_env["pmem"]


def test_pmem_falls_back_to_disk_with_a_warning_without_tmpfs(letl_env, monkeypatch, caplog):
    monkeypatch.delenv("LETL_TIER_PMEM_PATH")
    real_access = os.access
    monkeypatch.setattr(config.os, "access", lambda p, mode: False if str(p) == "/dev/shm" else real_access(p, mode))
    with caplog.at_level("WARNING", logger="letl"):
        cfg = LakeConfig.resolve()
    pmem = {t.name: t for t in cfg.tiers}["pmem"]
    assert pmem.path == Path(letl_env["home"]) / "tiers" / "pmem"
    assert any("falls back" in note for note in cfg.notes)
    assert "no writable tmpfs" in caplog.text
