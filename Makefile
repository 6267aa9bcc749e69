# The two commands: `make run` and `make test`. Both install what they need first.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: run test bench install schemas asyncapi

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked

run: install
	$(UV) run python deploy/devstack.py

test: install
	$(UV) run ruff check .
	$(UV) run python -m contracts.compatibility
	$(UV) run pytest $(PYTEST_ARGS)

# Starts its own system on free ports, loads it, prints the report and stops it (README:
# Benchmark). Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--rate 100 --duration 20".
bench: install
	$(UV) run python deploy/benchmark.py $(BENCH_ARGS)

# Regenerates contracts/schemas/; refuses a breaking change to a committed schema.
schemas: install
	$(UV) run python -m contracts.schema_files

# Regenerates services/<svc>/asyncapi.json from each service's broker (also at GET /asyncapi).
asyncapi: install
	$(UV) run python deploy/asyncapi_documents.py
