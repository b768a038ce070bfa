# Two commands do all set-up on a fresh machine:
#   make run    fetch and verify the model files, build, start the server (embedded store)
#   make test   fetch and verify the model files, then run every test; fails if a process the
#               tests started is still alive at the end (scripts/no-leftovers.py)
CARGO ?= cargo
BUILD_DIR ?= build

.PHONY: run test test-steps models build lint doc bench clean-models redis-server

models:
	bash scripts/fetch-models.sh

build:
	$(CARGO) build --release

# The Redis store's tests start their own redis-server (Debian's, 7.x) on loopback ports.
redis-server:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || \
	  { echo "installing redis-server (apt-get)"; \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y redis-server || \
	    { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update && \
	      $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y redis-server; }; }

run: models build
	./target/release/idem serve $(ARGS)

lint: doc
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --features otlp --lib --test otlp -- -D warnings

# API docs of the server and the client crate; a rustdoc warning fails.
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

test: models redis-server
	python3 scripts/no-leftovers.py -- $(MAKE) --no-print-directory test-steps

test-steps:
	$(CARGO) test --workspace
	$(CARGO) test --features otlp --test otlp
	bash scripts/check-client-crate.sh
	IDEM_REQUIRE_SEMANTIC=1 bash tests/python/run.sh -q
	bash tests/python/packages.sh
	bash tests/mcp/run.sh

bench: models
	$(CARGO) bench
