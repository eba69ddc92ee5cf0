# Front end to CMake. `make demo` and `make test` are the two commands of README.md; both
# install the Debian packages they need first (deploy/install-deps.sh is idempotent).
BUILD     ?= build
ASAN      ?= build-asan
TSAN      ?= build-tsan
JOBS      ?= $(shell nproc)
PYTHON    := /usr/bin/python3

.PHONY: all deps build test asan tsan demo package bench fresh-check clean

all: build

deps:
	@./deploy/install-deps.sh

$(BUILD)/Makefile: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j 2
	./tests/fuzz/run.sh build-fuzz 60

# The deployment checks (label deploy) do not depend on how postern was compiled: they run
# once, in `make test`.
asan: deps
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_SANITIZE=ON
	cmake --build $(ASAN) -j $(JOBS)
	cd $(ASAN) && ctest --output-on-failure -j 2 -LE deploy

# ThreadSanitizer: the unit tests (the cross-thread pieces) and the multi-worker relay
# (workers, spool_rewrite, admin: the admin endpoint posts to every worker's loop), and
# the newer integration modules; not storage, whose syscall shim (LD_PRELOAD) is for the
# spool's ordering, not its threads. postern-load is built too: test_load_tls drives it;
# and the man pages, which ctest `man` checks.
tsan: deps
	cmake -S . -B $(TSAN) -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_TSAN=ON
	cmake --build $(TSAN) -j $(JOBS) --target unit_tests postern postern-load man
	cd $(TSAN) && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -j 2 -LE deploy \
	  -E 'integration\.(relay_basic|pipelining|relay_control|crash_recovery|config|inbound_extensions|limits|crash_safety|routing|mx|bounces|outbound_tls|delivery_timeouts|storage)|dialogues'

demo: build
	./deploy/demo.sh $(BUILD)

# The Debian package: an optimised build of the relay alone (no test or benchmark
# libraries), packed by CPack (cmake/package.cmake) into build-pkg/postern_VERSION_amd64.deb.
PKG ?= build-pkg
package: deps
	cmake -S . -B $(PKG) -DCMAKE_BUILD_TYPE=Release -DPOSTERN_TESTS=OFF -DPOSTERN_BENCH=OFF
	cmake --build $(PKG) -j $(JOBS) --target postern postern-load
	cd $(PKG) && cpack -G DEB

# Benchmarks use an optimised build of their own: micro-benchmarks, then the end-to-end
# matrix against a Postfix relay (about 5 minutes on two cores; see bench/e2e.sh), then
# the TLS matrix against it (bench/tls_bench.py: no TLS, STARTTLS with RSA-2048, with
# ECDSA P-256, ECDSA resumed; one connection per message; about 5 minutes), then the
# queue backlog (bench/backlog.sh): BACKLOG_MESSAGES (default 200,000, about 250 MB of
# spool under /var/tmp and about a minute) queued for a next hop that is down, a restart
# on that spool, a flush. The full figure is a million:
# `make bench BACKLOG_MESSAGES=1000000` or `bench/backlog.sh build-rel --messages 1000000`
# (about 1.5 GB of disk). Last, the relay's peak RSS while it delivers 100 messages of
# 25 MiB at once (bench/outbound_memory.py: 2.5 GB of spool under /var/tmp, about a minute).
BENCH ?= build-rel
BACKLOG_MESSAGES ?= 200000
bench: deps
	cmake -S . -B $(BENCH) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BENCH) -j $(JOBS) --target postern postern-load postern-bench postern-milter-sink
	./bench/micro.sh $(BENCH)
	./bench/e2e.sh $(BENCH)
	./bench/milter.sh $(BENCH)
	/usr/bin/python3 bench/tls_bench.py $(BENCH)
	./bench/backlog.sh $(BENCH) --messages $(BACKLOG_MESSAGES)
	/usr/bin/python3 bench/outbound_memory.py $(BENCH)

# The two commands above on a plain Debian 12, as a new machine runs them: a minimal base
# made with mmdebstrap from this machine's Debian mirror, a container from it (podman),
# `apt-get install git make`, a clone of the committed HEAD, `make demo` and `make test`,
# each timed (deploy/fresh-check.sh). Needs root; not part of `make test` (about 25 min).
fresh-check:
	./deploy/fresh-check.sh

clean:
	rm -rf $(BUILD) $(ASAN) $(TSAN) $(BENCH) build-fuzz $(PKG)
