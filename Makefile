# mboxd: `make run` starts a server on 127.0.0.1:2525 delivering to ./mail; `make test` tests it.
CARGO ?= cargo
LISTEN ?= 127.0.0.1:2525
MAIL_DIR ?= ./mail
# Where cargo puts what it builds: CARGO_TARGET_DIR when set, as cargo itself reads it.
BUILD_DIR := $(or $(CARGO_TARGET_DIR),./target)

.PHONY: all build run test deps lazyfs lint ci soak bench fuzz clean

all: build

build:
	$(CARGO) build --release

run: build
	$(BUILD_DIR)/release/mboxd --listen $(LISTEN) --mail-dir $(MAIL_DIR)

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
	@# pytest, for the Python example (examples/python/) that tests/examples.rs runs.
	@if command -v python3 >/dev/null 2>&1 && ! python3 -m pytest --version >/dev/null 2>&1; then \
	  python3 -m pip install -q pytest >/dev/null 2>&1 || echo "could not install pytest: the Python example will be skipped"; \
	fi
	@# nodemailer, for the Node example (examples/node/) that tests/examples.rs runs.
	@if command -v npm >/dev/null 2>&1 && [ ! -d examples/node/node_modules/nodemailer ]; then \
	  (cd examples/node && npm ci --no-audit --no-fund >/dev/null 2>&1) || echo "could not install nodemailer: the Node example will be skipped"; \
	fi
	@# Unicode's DerivedCoreProperties.txt, to check the unsafe-character set against.
	@if [ ! -f /usr/share/unicode/DerivedCoreProperties.txt ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq >/dev/null 2>&1 || true); \
	    apt-get install -y -qq unicode-data >/dev/null 2>&1 || echo "could not install unicode-data: its cross-check will be skipped"; \
	  else \
	    echo "unicode-data not installed (needs root and apt-get): its cross-check will be skipped"; \
	  fi; \
	fi

# LazyFS for the power-loss test (tests/powerloss/): the binary named by LAZYFS=, or the one
# ../shared/tools/lazyfs/build.sh builds (about a minute, once) when running as root with
# /dev/fuse. It never fails `make test`: it prints why the power-loss test will be skipped.
# The path goes to the test through target/lazyfs-path.
LAZYFS_BUILD ?= ../shared/tools/lazyfs/build.sh
lazyfs:
	@mkdir -p target; rm -f target/lazyfs-path; \
	if [ -n "$(LAZYFS)" ]; then \
	  echo "$(LAZYFS)" > target/lazyfs-path; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "not root: LazyFS cannot be built or mounted, so the power-loss test will be skipped"; \
	elif [ ! -e /dev/fuse ]; then \
	  echo "no /dev/fuse: the power-loss test will be skipped"; \
	elif [ ! -f $(LAZYFS_BUILD) ]; then \
	  echo "no $(LAZYFS_BUILD): the power-loss test will be skipped (or set LAZYFS=)"; \
	elif out=$$(bash $(LAZYFS_BUILD) 2>&1); then \
	  echo "$$out" | tail -n 1 > target/lazyfs-path; \
	  echo "LazyFS for the power-loss test: $$(cat target/lazyfs-path)"; \
	else \
	  echo "building LazyFS failed, so the power-loss test will be skipped:"; \
	  echo "$$out" | tail -n 5; \
	fi

test: deps lazyfs
	LAZYFS="$$(cat target/lazyfs-path 2>/dev/null)" $(CARGO) test

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --lib --features fuzzing -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --features fuzzing

ci: lint test

# A bounded load run: good, idle and mid-DATA-aborting clients; checks every acknowledged
# message is stored exactly once and nothing leaks. Figures are in README.md.
soak:
	$(CARGO) run --release --example soak -- --connections 200 --messages 50000 --seconds 180

# Performance (issue 10): cases A, B, C against a fresh release mboxd on 127.0.0.1:0 (every
# message checked in the mbox) and, alternating, against Postfix's smtp-sink, which stores
# nothing; the same cases sent by Postfix's smtp-source; MB/s as messages grow to 10 MiB and
# msg/s as sessions grow to 64 (BENCH_ROUNDS rounds, at most 3); resident memory with 1000 idle
# sessions and at the peak of case C; start-up time. Prints markdown tables. Not part of
# `make test`. smtp-sink and smtp-source come from Debian's postfix package, installed here "No
# configuration" (no daemon is set up) when running as root; without them their comparisons
# print "skipped: <reason>". The soft open-files limit is raised to the hard one for the 1000
# idle sessions (the table says "skipped" if that is still too low).
BENCH_ROUNDS ?= 5
bench:
	$(CARGO) build --release --bin mboxd --example bench
	@if ! command -v smtp-sink >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-sink ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postfix for smtp-sink"; \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null 2>&1; } \
	    || echo "could not install postfix"; \
	  fi; \
	fi
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null; \
	$(BUILD_DIR)/release/examples/bench suite --mboxd $(BUILD_DIR)/release/mboxd --rounds $(BENCH_ROUNDS)

# Coverage-guided fuzzing of the protocol core (needs `cargo install cargo-fuzz` and nightly).
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && $(CARGO) +nightly fuzz run session -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && $(CARGO) +nightly fuzz run command -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && $(CARGO) +nightly fuzz run message -- -max_total_time=$(FUZZ_SECONDS)

# Build output only: the mail directory holds delivered mail and is never removed here.
clean:
	$(CARGO) clean
