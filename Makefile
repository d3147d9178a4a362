# The two commands: `make demo` and `make test`. Everything else wraps CMake.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
COV_BUILD  ?= build-coverage
JOBS       ?= $(shell nproc)
FUZZ_SECONDS ?= 60

.PHONY: all deps build test test-fast check-source demo demo-dwcp bench fuzz coverage clean

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Every test: source checks, unit + e2e, then the same suites under ASan+UBSan.
test: build check-source
	@cd $(BUILD) && ctest --output-on-failure
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCANARYD_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure

# Quick loop for development: the normal build only.
test-fast: build
	@cd $(BUILD) && ctest --output-on-failure

check-source: deps
	@scripts/check-source

demo: build
	@scripts/demo $(BUILD)

# The customer's DWCP plan rehearsed in about three minutes (docs/dwcp.md).
demo-dwcp: build
	@scripts/demo-dwcp $(BUILD)

bench: build
	@scripts/install-deps --bench
	@bench/run $(BUILD)

# Every libFuzzer target for FUZZ_SECONDS each, one at a time; a table of
# execs, coverage and crashes; non-zero on a crash (docs/fuzzing.md).
fuzz: deps
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DCANARYD_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz-targets
	@scripts/fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS)

# Line and branch coverage of the unit + e2e suites per module (docs/testing.md).
coverage: deps
	@scripts/coverage $(COV_BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(COV_BUILD)
