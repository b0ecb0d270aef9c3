# kvlab — `make run` and `make test` do all the set-up themselves.

CARGO ?= cargo
# The demo/test model lives outside target/ so `cargo clean` keeps it.
ifeq ($(shell uname),Darwin)
KVLAB_CACHE ?= $(HOME)/Library/Caches/kvlab
else
KVLAB_CACHE ?= $(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME),$(HOME)/.cache)/kvlab
endif
MODEL ?= $(KVLAB_CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
# The sliding-window test model (Gemma 3 270M): fetched for `make test` only.
GEMMA ?= $(KVLAB_CACHE)/models/gemma-3-270m-q4_k_m.gguf
FEATURES ?=
# The cargo profile `make package` packages: release, or dev for CI's package check (the binary
# the test build already compiled; see packaging/package.sh).
PACKAGE_PROFILE ?= release
KVLAB_RUNTIME_DIR := $(CURDIR)/target/runtime
CARGO_FLAGS := $(if $(FEATURES),--features $(FEATURES),)

.PHONY: run run-cli test screenshot package package-check check-vulkan check-cuda deps model gemma build clean

## Opens the kvlab app on the seed experiment with the demo model.
run: deps model
	$(CARGO) run $(CARGO_FLAGS) -- "$(MODEL)"

## Builds and runs the whole test suite against the real model, then opens the real window
## under Xvfb and checks its screenshot is not blank.
test: deps model gemma
	@# Mesa's Vulkan driver (UI snapshots) complains on every start without a runtime dir.
	@mkdir -p -m 700 "$(KVLAB_RUNTIME_DIR)"
	XDG_RUNTIME_DIR="$${XDG_RUNTIME_DIR:-$(KVLAB_RUNTIME_DIR)}" KVLAB_TEST_MODEL="$(MODEL)" KVLAB_TEST_GEMMA="$(GEMMA)" $(CARGO) test $(CARGO_FLAGS) --all-targets
	@# `cargo test` built target/debug/kvlab for the CLI tests: the window check runs that one.
	bash packaging/window-check.sh "$(MODEL)" target/window-check.png

## Runs the seed experiment in the terminal (no window).
run-cli: deps model
	$(CARGO) run $(CARGO_FLAGS) -- run assets/experiments/seed-short.json --model "$(MODEL)"

## Refreshes the README's screenshot (the app after a seed run).
screenshot: deps model
	$(CARGO) build $(CARGO_FLAGS)
	bash packaging/window-check.sh "$(MODEL)" assets/screenshot.png

## Builds the Linux packages into target/package/: the .deb (cargo-deb), the AppDir, and the
## AppImage where appimagetool is installed (packaging/package.sh).
package: deps
	CARGO="$(CARGO)" PACKAGE_PROFILE="$(PACKAGE_PROFILE)" bash packaging/package.sh $(CARGO_FLAGS)

## Builds the packages, then unpacks the .deb into a scratch root and checks its layout and
## metadata and that the unpacked kvlab runs on the demo model (packaging/check-deb.sh).
package-check: package model
	CARGO="$(CARGO)" bash packaging/check-deb.sh "$(MODEL)" target/package/kvlab_*.deb

## Builds with --features vulkan (target/vulkan) and runs the core integration tests on Mesa's
## software Vulkan driver, lavapipe: the model and its KV cache on a Vulkan device, no GPU needed.
check-vulkan: deps model
	bash packaging/check-vulkan.sh "$(MODEL)"

## The same with CUDA on this machine's NVIDIA GPU (needs nvcc); BENCH_MODEL=big.gguf adds tokens/s.
check-cuda: deps model
	KVLAB_BENCH_MODEL="$(BENCH_MODEL)" bash packaging/check-backend.sh cuda "$(MODEL)"

build: deps
	$(CARGO) build $(CARGO_FLAGS)

deps:
	@bash packaging/install-deps.sh

model:
	@bash packaging/fetch-model.sh "$(dir $(MODEL))"

gemma:
	@bash packaging/fetch-model.sh "$(dir $(GEMMA))" gemma

clean:
	$(CARGO) clean
