# Front end to CMake. `make demo` and `make test` are the two commands of README.md; both
# install the Debian packages they need first (deploy/install-deps.sh is idempotent).
BUILD     ?= build
ASAN      ?= build-asan
JOBS      ?= $(shell nproc)
PYTHON    := /usr/bin/python3

.PHONY: all deps build test unit integration asan demo bench clean

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

asan: deps
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_SANITIZE=ON
	cmake --build $(ASAN) -j $(JOBS)
	cd $(ASAN) && ctest --output-on-failure -j 2

demo: build
	./deploy/demo.sh $(BUILD)

bench: build
	./bench/e2e.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN) build-fuzz
