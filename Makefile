# mboxd: `make run` starts a server on 127.0.0.1:2525 delivering to ./mail; `make test` tests it.
CARGO ?= cargo
LISTEN ?= 127.0.0.1:2525
MAIL_DIR ?= ./mail

.PHONY: all build run test deps lint ci soak fuzz clean

all: build

build:
	$(CARGO) build --release

run: build
	./target/release/mboxd --listen $(LISTEN) --mail-dir $(MAIL_DIR)

# Optional interop peers. Tests that need a missing one print "skipped: ..." and pass.
deps:
	@for tool in swaks; do \
	  if command -v $$tool >/dev/null 2>&1; then continue; fi; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $$tool for the interop tests"; \
	    (apt-get update -qq >/dev/null 2>&1 || true); \
	    apt-get install -y -qq $$tool >/dev/null 2>&1 || echo "could not install $$tool: its interop test will be skipped"; \
	  else \
	    echo "$$tool not installed (needs root and apt-get): its interop test will be skipped"; \
	  fi; \
	done
	@command -v python3 >/dev/null 2>&1 || echo "python3 not found: the smtplib/mailbox and fcntl-lock tests will be skipped"

test: deps
	$(CARGO) test

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

ci: lint test

# A bounded load run: good, idle and mid-DATA-aborting clients; checks every acknowledged
# message is stored exactly once and nothing leaks. Figures are in README.md.
soak:
	$(CARGO) run --release --example soak -- --connections 200 --messages 50000 --seconds 180

# Coverage-guided fuzzing of the protocol core (needs `cargo install cargo-fuzz` and nightly).
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && $(CARGO) +nightly fuzz run session -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && $(CARGO) +nightly fuzz run command -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && $(CARGO) +nightly fuzz run message -- -max_total_time=$(FUZZ_SECONDS)

# Build output only: the mail directory holds delivered mail and is never removed here.
clean:
	$(CARGO) clean
