# Coyote — thin wrapper over CMake/CTest. `make run` and `make test` install
# missing Debian packages first (scripts/setup-deps), so both work on a fresh
# Debian 12 machine.
BUILD       ?= build
BUILD_ASAN  ?= build-asan
BUILD_FUZZ  ?= build-fuzz
BUILD_TYPE  ?= RelWithDebInfo
JOBS        ?= 2
DATA_DIR    ?= ./coyote-data
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=
PREFIX      ?= /usr/local

.PHONY: all build deps run test test-asan bench fuzz format clean install

all: build

deps:
	@scripts/setup-deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

# Start the server on its defaults (127.0.0.1:8624, data in ./coyote-data).
run: deps build
	$(BUILD)/coyoted --data-dir $(DATA_DIR)

# Install libcoyote (.a, .so, coyote.h, coyote.pc) and the binaries under PREFIX
# (make install PREFIX=/some/dir; DESTDIR is honoured by cmake --install).
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# Every test: unit (cmocka), fuzz corpus replays, integration scripts.
test: deps build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The same tests built with clang under AddressSanitizer + UndefinedBehaviorSanitizer,
# with the fuzz targets as real libFuzzer binaries run briefly from their corpus.
test-asan: deps
	CC=clang cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DCOYOTE_SANITIZE=ON \
	    -DCOYOTE_FUZZ=ON -DCOYOTE_FUZZ_SECONDS=20 $(CMAKE_FLAGS)
	cmake --build $(BUILD_ASAN) -j$(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j$(JOBS)

# Benchmarks print figures; they never pass or fail (bench/README.md).
# BENCH_FLAGS (e.g. --quick) is passed to each.
BENCH_FLAGS ?=
bench: deps build
	$(BUILD)/bench_journal $(BENCH_FLAGS)
	$(BUILD)/bench_broker $(BENCH_FLAGS)
	$(BUILD)/bench_http $(BENCH_FLAGS)

# Fuzz every target for FUZZ_SECONDS each, starting from (a copy of) its corpus.
fuzz: deps
	CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DCOYOTE_SANITIZE=ON \
	    -DCOYOTE_FUZZ=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD_FUZZ) -j$(JOBS)
	@set -e; for t in $(BUILD_FUZZ)/tests/fuzz_*; do \
	    name=$$(basename $$t); parser=$${name#fuzz_}; \
	    work=$(BUILD_FUZZ)/corpus/$$parser; mkdir -p $$work; \
	    cp -n tests/fuzz/corpus/$$parser/* $$work/ 2>/dev/null || true; \
	    echo "== $$name ($(FUZZ_SECONDS) s)"; \
	    $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$work; \
	done

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
