# Tessera: `make run` serves the bundled model, `make test` runs the suite.
SHELL := /bin/bash
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
PY := .venv/bin/python

.PHONY: all setup setup-extra configure build test run bench compare fuzz clean

all: build

setup:
	@tools/setup/setup.sh

# Optional: a second real model (Qwen2.5-Coder-0.5B, 478 MB) for the oracle
# tests that skip without it.
setup-extra: setup
	@tools/setup/setup_extra.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: setup $(BUILD)/build.ninja

build: configure
	ninja -C $(BUILD) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 900

run: build
	@BIN=$(BUILD)/bin tools/run.sh

bench: build
	$(PY) tests/bench/bench_generate.py --tessera-bin $(BUILD)/bin
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_gateway.py
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_serving.py
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_latency.py
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_quantize.py
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_structured.py
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_lora.py
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_routing.py
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_tensor_parallel.py
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_hf_formats.py
	TESSERA_BIN=$(BUILD)/bin $(PY) tests/bench/bench_cuda.py

# Quantizes the dense baseline into every served format and writes the
# comparison table (size, speed, perplexity, KL, top-1) into the README.
COMPARE_ARGS ?=
compare: build
	$(PY) tests/bench/compare_formats.py --tessera-bin $(BUILD)/bin --readme README.md $(COMPARE_ARGS)

# libFuzzer + ASan/UBSan build of the parsers (model files, requests, chat
# templates, the tokenizer), run briefly.
FUZZ_SECONDS ?= 30
fuzz: setup
	cmake -S . -B $(BUILD)-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTESSERA_FUZZ=ON \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
	ninja -C $(BUILD)-fuzz
	for f in gguf safetensors hf_json openai_request jinja tokenizer; do \
	  mkdir -p $(BUILD)-fuzz/fuzz-corpus-$$f && \
	  $(BUILD)-fuzz/bin/$${f}_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 \
	    $(BUILD)-fuzz/fuzz-corpus-$$f tests/fuzz/corpus/$$f || exit 1; \
	done

clean:
	rm -rf $(BUILD) $(BUILD)-fuzz
