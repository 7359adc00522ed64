# Nexus — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export NEXUS_TOOLS_DIR ?= $(HOME)/.cache/nexus/bin

.PHONY: install test-tools run ctl lint format typecheck check test test-fast test-faults soak images test-images proto dashboards bench clean

install: ## uv, the Python workspace (from uv.lock), nats-server, FerretDB and PostgreSQL
	@command -v uv >/dev/null 2>&1 || [ -x "$(UV)" ] || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@$(UV) sync --all-packages --frozen --quiet
	@scripts/install-tools.sh >/dev/null

test-tools: ## what the suite uses besides the servers: Prometheus and promtool, bubblewrap, node, chromium (Debian packages)
	@scripts/install-test-tools.sh

run: install ## the whole system on this machine (data in .nexus/)
	@$(UV) run --frozen nexus-dev run

ctl: ## nexusctl against the local system, e.g. `make ctl ARGS="runs list"` (or .venv/bin/nexusctl)
	@$(UV) run --frozen nexusctl $(ARGS)

lint: ## ruff's checks and its formatting, checked (pyproject.toml [tool.ruff]); `make format` applies the formatting
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .

format: ## ruff's formatting applied to the tree (what `make lint` checks)
	@$(UV) run --frozen ruff format .

typecheck: ## mypy over every package's sources (pyproject.toml [tool.mypy])
	@$(UV) run --frozen mypy

check: lint typecheck ## what must hold before any test runs

test: install test-tools check ## the whole suite against real NATS and FerretDB started on free ports, with coverage per package
	@mkdir -p .coverage-data && rm -f .coverage-data/coverage*
	@$(UV) run --frozen pytest -p no:cacheprovider --ignore=tests/images --cov --cov-report=
	@$(UV) run --frozen python scripts/coverage_report.py

test-fast: install ## the tests that need no server (no NATS, no database, no service process); a test using one is marked infra
	@$(UV) run --frozen pytest -p no:cacheprovider --ignore=tests/images -m "not infra and not e2e"

images: install ## every service image from its Dockerfile (Docker's engine from Debian's packages)
	@scripts/images.sh

test-images: install ## build the images, start each against NATS and FerretDB, one run through the containers
	@$(UV) run --frozen pytest -p no:cacheprovider tests/images

test-faults: install ## the whole fault matrix (SIGKILL of every service, a forked runner, the zygote, nats-server, FerretDB at three points) and bus poison
	@NEXUS_FAULTS=full $(UV) run --frozen pytest -p no:cacheprovider -s tests/faults

soak: install ## a bounded soak (SOAK_MINUTES=10, SOAK_CONCURRENT=100): RSS/open files per service before and after, consumer lag
	@$(UV) run --frozen python -m bench.soak

proto: ## regenerate proto/ from the msgspec types and the subject catalog
	@$(UV) run --frozen python -m nexus.events.proto proto

dashboards: ## regenerate deploy/grafana/dashboards from their code (nexus.dev.dashboards)
	@$(UV) run --frozen python -m nexus.dev.dashboards

bench: install ## every benchmark, each printing JSON and its same-run baseline
	@for b in runner dispatch api kernel throughput board history ui; do $(UV) run --frozen python -m bench.$$b || exit 1; done

clean:
	rm -rf .nexus
