# Two commands do all set-up on a fresh machine:
#   make run    fetch and verify the model files, build, start the server (embedded store)
#   make test   fetch and verify the model files, then run every test
CARGO ?= cargo
BUILD_DIR ?= build

.PHONY: run test models build lint bench clean-models

models:
	bash scripts/fetch-models.sh

build:
	$(CARGO) build --release

run: models build
	./target/release/idem serve $(ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: models
	$(CARGO) test
	IDEM_REQUIRE_SEMANTIC=1 bash tests/python/run.sh -q
	bash tests/mcp/run.sh -q

bench: models
	$(CARGO) bench
