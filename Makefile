# Nexus — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export NEXUS_TOOLS_DIR ?= $(HOME)/.cache/nexus/bin

.PHONY: install run test proto bench clean

install: ## uv, the Python workspace (from uv.lock), nats-server, FerretDB and PostgreSQL
	@command -v uv >/dev/null 2>&1 || [ -x "$(UV)" ] || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@$(UV) sync --all-packages --frozen --quiet
	@scripts/install-tools.sh >/dev/null

run: install ## the whole system on this machine (data in .nexus/)
	@$(UV) run --frozen nexus-dev run

test: install ## the whole suite against real NATS and FerretDB started on free ports
	@$(UV) run --frozen pytest -p no:cacheprovider

proto: ## regenerate proto/ from the msgspec types and the subject catalog
	@$(UV) run --frozen python -m nexus.events.proto proto

bench: install ## every benchmark, each printing JSON and its same-run baseline
	@for b in runner dispatch api kernel history; do $(UV) run --frozen python -m bench.$$b || exit 1; done

clean:
	rm -rf .nexus
