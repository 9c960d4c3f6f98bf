# One venv for the whole course. Every target that needs it depends on `install`,
# so `make run-final` or `make test` works as the first command on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
WORKERS ?= 1
# Keep __pycache__ out of the week folders, so `make diff-weekN` shows only the lesson.
export PYTHONPYCACHEPREFIX := $(CURDIR)/.cache/pycache

# The weeks a learner builds in my/: `make start-week5`, `make grade-week5`, ...
WEEKS := week5 week6 week7 week8 final

.DEFAULT_GOAL := help
.PHONY: help install lock run-week5 run-week6 run-week7 run-week8 run-final migrate demo-week6 demo-week8 \
        steps step $(addprefix start-,$(WEEKS)) $(addprefix grade-,$(WEEKS)) \
        test test-week5 test-week6 test-week7 test-week8 test-shared test-final test-redis-modes \
        check format mutate diff-week6 diff-week7 diff-week8 bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@printf "  \033[36m%-12s\033[0m %s\n" start-weekN "create my/weekN to build week N yourself (week5..week8, final)" \
		grade-weekN "grade my/weekN with the tests the reference week passes"

install: $(VENV)/.installed ## create .venv and install the pinned dependencies (idempotent)

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

lock: ## re-pin constraints.txt after changing pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,mutation]'
	{ head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt

run-week5: install ## week 5: REST + CRUD (port 8005)
	$(BIN)/uvicorn week5_crud.app.main:app --host $(HOST) --port $(or $(PORT),8005)

run-week6: install ## week 6: async store, background tasks (port 8006)
	$(BIN)/uvicorn week6_async.app.main:app --host $(HOST) --port $(or $(PORT),8006)

run-week7: install ## week 7: passwords, JWT, middleware (port 8007)
	$(BIN)/uvicorn week7_auth.app.main:app --host $(HOST) --port $(or $(PORT),8007)

run-week8: install ## week 8: Redis cache and rate limits (port 8008, WORKERS=n)
	$(BIN)/uvicorn week8_redis.app.main:app --host $(HOST) --port $(or $(PORT),8008) --workers $(WORKERS)

run-final: install ## the final project (port 8000, WORKERS=n); migrates DATABASE_URL first
	@# Validate the settings first: with several workers, uvicorn would stop on a refused
	@# production config but still exit 0.
	@$(BIN)/python -m final_project.app.config
	$(BIN)/alembic -c final_project/alembic.ini upgrade head
	@# The image's command: uvicorn with WORKERS processes, and with METRICS_ENABLED one
	@# metrics directory for all of them.
	HOST=$(HOST) PORT=$(or $(PORT),8000) WORKERS=$(WORKERS) $(BIN)/python -m final_project.serve

migrate: install ## upgrade the final project's database (DATABASE_URL) to the newest revision
	$(BIN)/alembic -c final_project/alembic.ini upgrade head

demo-week6: install ## week 6: time concurrent async, sync and blocking sleeps
	$(BIN)/python -m week6_async.demo

demo-week8: install ## week 8: time a cached read (HIT) against the store (MISS)
	$(BIN)/python -m week8_redis.demo

steps: ## list the small runnable step of each roadmap day
	@for f in week*/steps/day*.py; do \
		printf "  %-18s %s\n" "$$(echo $$f | sed -E 's#^(week[0-9]+)_[a-z]+/steps/(day[0-9]+)_(.*)\.py#\1/\2 \3#' | cut -d' ' -f1)" \
			"$$(sed -n '1{s/^"""//;s/"""$$//;p;}' $$f)"; \
	done
	@echo "Run one: make step STEP=week5/day1"

step: install ## run one step: make step STEP=week5/day1 (make steps lists them)
	@test -n "$(STEP)" || { echo "usage: make step STEP=week5/day1 (make steps lists them)"; exit 2; }
	@f=$$(ls $(firstword $(subst /, ,$(STEP)))_*/steps/$(lastword $(subst /, ,$(STEP)))[_.]*py 2>/dev/null | head -1); \
	test -n "$$f" || { echo "No step $(STEP): make steps lists them."; exit 2; }; \
	module=$$(echo "$${f%.py}" | tr / .); echo "python -m $$module"; $(BIN)/python -m $$module

$(addprefix start-,$(WEEKS)): start-%: install
	$(BIN)/python -m learn.start $*

$(addprefix grade-,$(WEEKS)): grade-%: install
	@$(BIN)/python -m learn.grade $*

# The tests that talk to Redis, run again on a 3-primary Redis Cluster and behind
# Sentinel (private servers the test setup starts); `make test-redis-modes` runs all.
SCALED_TESTS := tests/shared tests/final_project/test_workers.py
# pytest-xdist: one test process per core (at most 4), each given whole files, so a
# file's servers start once. Each process starts its own private Redis when it needs one.
PARALLEL := -n auto --maxprocesses 4 --dist loadfile

test: install ## run every test, then the Redis ones on a cluster and behind Sentinel
	$(BIN)/pytest $(PARALLEL)
	$(BIN)/pytest -q $(PARALLEL) $(SCALED_TESTS) --redis-mode cluster
	$(BIN)/pytest -q $(PARALLEL) $(SCALED_TESTS) --redis-mode sentinel

test-week5: install ## week 5 tests and the contract suite over week 5
	$(BIN)/pytest tests/week5_crud tests/contract --app week5

test-week6: install ## week 6 tests and the contract suite over week 6
	$(BIN)/pytest tests/week6_async tests/contract --app week6

test-week7: install ## week 7 tests and the contract suite over week 7
	$(BIN)/pytest tests/week7_auth tests/contract --app week7

test-week8: install ## week 8 tests and the contract suite over week 8
	$(BIN)/pytest tests/week8_redis tests/contract --app week8

test-shared: install ## the shared/ library's tests
	$(BIN)/pytest tests/shared

test-final: install ## final project tests and the contract suite over it
	$(BIN)/pytest tests/final_project tests/contract --app final

test-redis-modes: install ## shared and final project tests against a Redis Cluster, then Sentinel
	$(BIN)/pytest $(PARALLEL) tests/shared tests/final_project --redis-mode cluster
	$(BIN)/pytest $(PARALLEL) tests/shared tests/final_project --redis-mode sentinel

check: install ## lint, format check and type check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Not part of `make test` or CI: ~30 minutes on 2 cores. A re-run tests only the mutants of
# functions that changed since the last one. GROUP=shared-cache runs one group (see mutation/).
mutate: install ## mutation testing: how many planted bugs the tests catch (mutation/README.md)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,mutation]'
	$(BIN)/python -m mutation $(GROUP)

diff-week6: ## what week 6 changed in week 5's app
	@git diff --no-index week5_crud/app week6_async/app || true

diff-week7: ## what week 7 changed in week 6's app
	@git diff --no-index week6_async/app week7_auth/app || true

diff-week8: ## what week 8 changed in week 7's app
	@git diff --no-index week7_auth/app week8_redis/app || true

bench: install ## load-test with wrk; writes bench/results.md
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m bench

clean: ## remove the venv, caches and local data
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache data
