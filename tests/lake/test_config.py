"""Lake configuration: the table of LETL_* settings, sizes, tier defaults, environment overrides, the pmem fallback."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from letl.lake import config
from letl.lake.config import SETTINGS, LakeConfig, declared, parse_size, setting
from letl.lake.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
MALFORMED = {"int": "many", "seconds": "soon", "seconds-or-none": "soon", "size": "lots", "bool": "maybe",
             "paths": "relative/dir"}


def concrete(name: str) -> str:
    """A family's variable for one tier: LETL_TIER_<NAME>_QUOTA -> LETL_TIER_SSD_QUOTA."""
    return re.sub(r"<[A-Z]+>", "SSD", name)


def test_every_letl_variable_in_the_source_is_declared():
    named = set()
    for package in ("letl", "letl_assets", "explorer"):
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".md", ".yaml", ".toml") and "__pycache__" not in path.parts:
                named |= set(re.findall(r"LETL_[A-Z0-9_]+", path.read_text()))
    assert {"LETL_HOME", "LETL_S3_MAX_CONCURRENCY", "LETL_EXPLORER_ROW_CAP", "LETL_PSEUDONYM_KEY"} <= named
    undeclared = []
    for name in sorted(named):
        if name.endswith("_"):  # a prefix in a message or a family's stem (LETL_TIER_<NAME>_PATH)
            if not any(s.name.startswith(name) for s in SETTINGS):
                undeclared.append(name)
            continue
        try:
            declared(name)
        except KeyError:
            undeclared.append(name)
    assert undeclared == [], "declare these in letl.lake.config.SETTINGS"


def test_the_table_names_each_setting_once_and_its_defaults_parse():
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    for spec in SETTINGS:
        assert spec.about and spec.kind in config._KINDS, spec.name
        # setting() falls back to the default, so a default that does not parse fails here.
        setting(concrete(spec.name), environ={})
        if spec.kind in MALFORMED:
            setting(concrete(spec.name), environ={concrete(spec.name): spec.example or spec.default})


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.kind in MALFORMED], ids=lambda s: s.name)
def test_a_malformed_value_is_invalid_input_that_names_the_variable_and_a_valid_one(spec):
    name = concrete(spec.name)
    with pytest.raises(InvalidInput) as caught:
        setting(name, environ={name: MALFORMED[spec.kind]})
    message = str(caught.value)
    assert name in message and repr(MALFORMED[spec.kind]) in message
    assert f"for example {name}={spec.example or spec.default}" in message


def test_a_malformed_variable_in_the_process_environment_is_refused_when_read(monkeypatch):
    monkeypatch.setenv("LETL_LEASE_SECONDS", "a minute")
    with pytest.raises(InvalidInput, match="LETL_LEASE_SECONDS='a minute' is not a duration"):
        setting("LETL_LEASE_SECONDS")
    monkeypatch.setenv("LETL_LEASE_SECONDS", "90")
    assert setting("LETL_LEASE_SECONDS") == 90.0


def test_typed_values_and_minimums():
    env = {"LETL_OBJECTSTORE": "off", "LETL_STEWARDS": " ana, bo ,", "LETL_SOURCE_ROOTS": "/a:/b",
           "LETL_POLICY_MAX_IDLE_SSD": "none", "LETL_DUCKDB_MEMORY": "0", "LETL_S3_MAX_CONCURRENCY": "0"}
    assert setting("LETL_OBJECTSTORE", env) is False and setting("LETL_DEBUG", env) is False
    assert setting("LETL_STEWARDS", env) == ("ana", "bo")
    assert setting("LETL_SOURCE_ROOTS", env) == (Path("/a"), Path("/b"))
    assert setting("LETL_POLICY_MAX_IDLE_SSD", env) is None  # no limit, unlike unset (the tier's default)
    assert setting("LETL_DUCKDB_MEMORY", env) == 0
    assert setting("LETL_TIER_SSD_QUOTA", env) is None  # unset: the tier's own default applies
    with pytest.raises(InvalidInput, match="at least 1"):
        setting("LETL_S3_MAX_CONCURRENCY", env)
    with pytest.raises(KeyError):
        setting("LETL_NOBODY_DECLARED_THIS", env)


def test_a_secret_never_appears_in_a_message(monkeypatch):
    secrets = [s for s in SETTINGS if s.secret]
    assert {"LETL_API_TOKEN", "LETL_S3_SECRET_ACCESS_KEY", "LETL_PSEUDONYM_KEY"} <= {s.name for s in secrets}
    # Secrets are free text today, so none can be malformed: give one a typed kind to see the message.
    token = declared("LETL_API_TOKEN")
    monkeypatch.setitem(config._BY_NAME, token.name, dataclasses.replace(token, kind="int"))
    with pytest.raises(InvalidInput) as caught:
        setting(token.name, environ={token.name: "s3cr3t-token-value"})
    assert token.name in str(caught.value) and "s3cr3t" not in str(caught.value)


def test_s3_concurrency_is_read_when_a_backend_is_made_not_at_import(monkeypatch):
    env = {**os.environ, "LETL_S3_MAX_CONCURRENCY": "lots"}
    imported = subprocess.run([sys.executable, "-c", "import letl.storage.s3"], env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr

    from letl.storage.s3 import S3Backend, make_s3_client

    monkeypatch.setenv("LETL_S3_MAX_CONCURRENCY", "3")
    assert S3Backend(object(), "bucket").max_concurrency == 3
    assert S3Backend(object(), "bucket", max_concurrency=5).max_concurrency == 5
    monkeypatch.setenv("LETL_S3_MAX_CONCURRENCY", "20")
    assert make_s3_client("http://127.0.0.1:1", "key", "secret").meta.config.max_pool_connections == 40
    monkeypatch.setenv("LETL_S3_MAX_CONCURRENCY", "lots")
    with pytest.raises(InvalidInput, match="LETL_S3_MAX_CONCURRENCY='lots' is not a whole number"):
        S3Backend(object(), "bucket")


def test_the_cli_refuses_a_malformed_setting_with_the_invalid_input_code(letl_env, monkeypatch, capsys):
    from letl.cli.main import main

    monkeypatch.setenv("LETL_DEBUG", "maybe")
    assert main(["lake", "ls"]) == 2
    assert "LETL_DEBUG='maybe' is not on or off" in capsys.readouterr().err
    monkeypatch.setenv("LETL_DEBUG", "off")
    monkeypatch.setenv("LETL_TIER_SSD_QUOTA", "plenty")
    assert main(["lake", "ls"]) == 2
    err = capsys.readouterr().err
    assert "LETL_TIER_SSD_QUOTA='plenty' is not a size" in err and "Traceback" not in err


def test_a_zero_quota_in_the_environment_is_no_quota(letl_env, monkeypatch):
    monkeypatch.setenv("LETL_TIER_SSD_QUOTA", "0")
    assert {t.name: t for t in LakeConfig.resolve().tiers}["ssd"].quota_bytes == 0


@pytest.mark.parametrize(
    "text, expected",
    [("0", 0), ("512", 512), ("1KB", 1000), ("1KiB", 1024), ("1.5GiB", int(1.5 * 2**30)), (" 20 gb ", 20 * 10**9)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "size, shown", [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (27_300_000, "26.0 MiB"), (20 * 2**30, "20.0 GiB"),
                    (3 * 2**40, "3.0 TiB")],
)
def test_sizes_are_shown_in_binary_units_and_a_quota_reads_back_as_set(size, shown):
    assert config.format_size(size) == shown
    assert config.format_size(parse_size("20GiB")) == "20.0 GiB"


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


@pytest.mark.parametrize(("text", "message"), [
    ("tiers:\n  - name: ssd\n    quotaa: 1GiB\n", "tiers.0.quotaa: unknown field"),
    ("tiers:\n  - rank: 1\n    location: /x\n", "tiers.0.name: field required"),
    ("tiers:\n  - name: tape\n", "tiers.0.name: input should be"),
    ("tiers:\n  - name: ssd\n    high_watermark: 2\n", "tiers.0.high_watermark: input should be less than or equal to 1"),
    ("tiers:\n  - name: ssd\n  - name: ssd\n", "tiers: ssd listed more than once"),
    ("tier:\n  - name: ssd\n", "tier: unknown field"),
    ("tiers:\n  - name: ssd\n   rank: 1\n", "line 3: not valid YAML"),
])
def test_a_tiers_file_with_a_typo_or_a_missing_field_is_refused_naming_both(letl_env, monkeypatch, text, message):
    path = letl_env["home"] / "tiers.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as refused:
        LakeConfig.resolve()
    assert str(refused.value).startswith(f"{path}") and message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_valid_tiers_file_sets_what_it_names_and_leaves_the_rest(letl_env, tmp_path):
    (letl_env["home"] / "tiers.yaml").write_text(
        f"tiers:\n  - name: ssd\n    location: {tmp_path / 'fast'}\n    quota: 2GiB\n    high_watermark: 0.8\n")
    tiers = {t.name: t for t in LakeConfig.resolve().tiers}
    ssd = tiers["ssd"]
    assert (ssd.location, ssd.quota_bytes, ssd.high_watermark) == (str(tmp_path / "fast"), 2 << 30, 0.8)
    assert (tiers["ssd"].rank, tiers["ssd"].low_watermark) == (1, 0.7)
    assert tiers["hdd"].quota_bytes == 0


def test_the_cli_refuses_a_bad_tiers_file_in_one_line_with_exit_2(letl_env, capsys):
    from letl.cli import main as cli

    path = letl_env["home"] / "tiers.yaml"
    path.write_text("tiers:\n  - name: ssd\n    quotaa: 1GiB\n")
    assert cli.main(["tier", "ls"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: tiers.0.quotaa: unknown field") and err.count("\n") == 1
