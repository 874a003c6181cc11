# Two commands on a fresh machine: `make run` (set up + main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export LETL_HOME ?= $(CURDIR)/.letl
export DAGSTER_HOME ?= $(LETL_HOME)/dagster

.PHONY: run test ui explorer venv bench bench-ingest bench-tiers bench-gros bench-explorer clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BIN)/letl run

# One pytest worker per CPU (logical: a VM may report its 2 vCPUs as 1 physical core); worksteal
# evens out the files whose tests take 10-50 s each (tests/assets, tests/explorer).
# The tests' temporary directories go on tmpfs when it has 4 GiB free: the Dagster runs in them
# commit (and fsync) their SQLite event logs once per event, which costs a fifth of those tests' time
# on disk (measured). One directory per checkout, since pytest empties it when it starts; removed
# after the run, as tmpfs is memory.
TEST_TMP := $(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 > 4194304 {print "/dev/shm/letl-pytest-'$$(printf %s "$(CURDIR)" | cksum | cut -d' ' -f1)'"}')
# scripts/chromium.sh and scripts/postgres.sh (through scripts/debian-package.sh) find or install
# Debian's chromium (browser tests) and postgresql (the catalog on a real Postgres), as CI does; where
# they can do neither, make test stops there and says how to install them.
test: venv
	bash scripts/chromium.sh
	bash scripts/postgres.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n logical --dist worksteal $(if $(TEST_TMP),--basetemp=$(TEST_TMP)); \
		status=$$?; $(if $(TEST_TMP),rm -rf $(TEST_TMP);) exit $$status

ui: venv
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\n' > $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev -w workspace.yaml

# The explorer on 127.0.0.1 only: put a proxy with sign-in in front before sharing it.
explorer: venv
	$(BIN)/streamlit run explorer/app.py --server.address 127.0.0.1 --server.headless true \
		--browser.gatherUsageStats false

# Each bench compares our path with the raw tool in the same run; its last line is one JSON object.
bench: bench-ingest bench-tiers bench-gros bench-explorer

bench-ingest: venv
	$(BIN)/python bench/ingest.py

bench-tiers: venv
	$(BIN)/python bench/tiers.py

bench-gros: venv
	$(BIN)/python bench/gros.py

bench-explorer: venv
	$(BIN)/python bench/explorer.py

# The pmem tier lives on /dev/shm, outside LETL_HOME: remove every tier directory first.
clean:
	-test -x $(BIN)/letl && $(BIN)/letl objectstore down
	-test -x $(BIN)/python && $(BIN)/python -c "import shutil; from letl.lake.config import LakeConfig; [shutil.rmtree(t.path, ignore_errors=True) for t in LakeConfig.resolve().tiers]"
	rm -rf $(LETL_HOME)
