#!/usr/bin/env bash
# Builds kvlab with one of llama.cpp's GPU backends and checks it on this machine's device: the
# build names the backend, llama.cpp sees the device and puts the model's layers and its KV cache
# there, a seed run works, and the core integration tests (engine, outcomes, sweeps: KV surgery
# through llama.cpp's state copies to host memory) pass with every layer offloaded.
#
#   bash packaging/check-backend.sh vulkan|cuda|metal [MODEL.gguf]
#
# vulkan: by default on Mesa's software driver lavapipe (packaging/check-vulkan.sh), so it runs
#         without a GPU; KVLAB_VULKAN_ANY_DEVICE=1 uses whatever Vulkan device the machine has.
# cuda:   needs the CUDA toolkit (nvcc) and an NVIDIA GPU.
# metal:  needs macOS on Apple silicon.
# KVLAB_BENCH_MODEL=big.gguf also runs `kvlab bench --quick` on that model (tokens/s on the GPU).
# The build goes to target/BACKEND, never replacing the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."

backend="${1:?usage: check-backend.sh vulkan|cuda|metal [MODEL.gguf]}"
model="${2:-${KVLAB_TEST_MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/kvlab/models/SmolLM2-135M-Instruct.Q4_1.gguf}}"
[ -f "$model" ] || { echo "check-$backend: no model at $model (run make model)" >&2; exit 1; }
started=$(date +%s)
step() { echo "== check-$backend: $* ($(( $(date +%s) - started )) s)"; }
fail() { echo "check-$backend: $*" >&2; exit 1; }
out="target/$backend"
mkdir -p "$out"

case "$backend" in
  vulkan)
    device=Vulkan
    need=()
    [ -e /usr/include/vulkan/vulkan.h ] || need+=(libvulkan-dev)
    command -v glslc >/dev/null 2>&1 || need+=(glslc)
    compgen -G "/usr/share/cmake/SPIRV-Headers/*.cmake" >/dev/null || need+=(spirv-headers)
    compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null || need+=(mesa-vulkan-drivers)
    if [ ${#need[@]} -gt 0 ]; then
      command -v apt-get >/dev/null || fail "please install ${need[*]}"
      sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
      step "installing ${need[*]}"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    # llama.cpp's Vulkan backend uses VK_EXT_layer_settings (Vulkan headers >= 1.3.261). Debian 12
    # ships 1.3.239: then the headers alone (no libraries) come from Debian 13's libvulkan-dev,
    # unpacked under target/vulkan/headers and put first on the C++ include path.
    header_version=$(sed -n 's/^#define VK_HEADER_VERSION \([0-9]*\).*/\1/p' /usr/include/vulkan/vulkan_core.h)
    if grep -q "^#define VK_HEADER_VERSION_COMPLETE VK_MAKE_API_VERSION(0, 1, 3," /usr/include/vulkan/vulkan_core.h \
      && [ "${header_version:-0}" -lt 261 ]; then
      headers="$PWD/$out/headers"
      if [ ! -e "$headers/usr/include/vulkan/vulkan.hpp" ]; then
        command -v apt-get >/dev/null || fail "Vulkan headers $header_version are too old (need 1.3.261+)"
        step "Vulkan headers 1.3.$header_version are too old for llama.cpp: fetching Debian 13's"
        apt_dir="$PWD/$out/apt"
        mkdir -p "$apt_dir/lists/partial" "$headers"
        echo "deb http://deb.debian.org/debian trixie main" > "$apt_dir/sources.list"
        apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
                  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir")
        apt-get "${apt_opts[@]}" update -qq
        (cd "$apt_dir" && apt-get "${apt_opts[@]}" download libvulkan-dev 2>/dev/null)
        dpkg-deb -x "$apt_dir"/libvulkan-dev_*.deb "$headers"
      fi
      export CXXFLAGS="-isystem $headers/usr/include ${CXXFLAGS:-}"
    fi
    if [ "${KVLAB_VULKAN_ANY_DEVICE:-0}" != 1 ]; then
      # Only lavapipe: the check must not depend on whatever GPU the machine has.
      VK_ICD_FILENAMES="$(compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" | head -1)"
      # llama.cpp skips CPU-type Vulkan devices unless they are named: lavapipe is device 0 here.
      export VK_ICD_FILENAMES GGML_VK_VISIBLE_DEVICES=0
    fi
    ;;
  cuda)
    device=CUDA
    command -v nvcc >/dev/null 2>&1 || fail "needs the CUDA toolkit (nvcc on PATH)"
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    ;;
  metal)
    device=Metal
    [ "$(uname)" = Darwin ] || fail "Metal needs macOS"
    ;;
  *) fail "unknown backend $backend (vulkan, cuda or metal)" ;;
esac

export CARGO_TARGET_DIR="$PWD/$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$PWD/target/runtime}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
export KVLAB_TEST_MODEL="$model"
cargo="${CARGO:-cargo}"

# One build for the binary and the tests: `cargo build` alone would resolve a build-script
# dependency differently from `cargo test` and build llama.cpp twice.
tests=(--test engine --test outcomes --test sweep)
step "building kvlab and its tests with --features $backend"
"$cargo" test --features "$backend" --no-run "${tests[@]}"
bin="$CARGO_TARGET_DIR/debug/kvlab"

step "the build and the device"
"$bin" --version | tee "$out/version.txt"
grep -q "^backends .*$backend" "$out/version.txt" || fail "kvlab --version does not list $backend"
"$bin" inspect "$model" 2>/dev/null | tee "$out/inspect.txt"
grep -q "${device}0: " "$out/inspect.txt" || fail "llama.cpp sees no $device device"
grep -q "^KV cache *${device}0.* memory (all [0-9]* layers)" "$out/inspect.txt" \
  || fail "the KV cache would not be on the $device device"

step "a seed run, with llama.cpp's own word on where the KV cache is"
spec="$out/seed-8.json"
sed 's/"max_tokens": *[0-9]*/"max_tokens": 8/' assets/experiments/seed-short.json > "$spec"
"$bin" -vv run "$spec" --model "$model" --out "$out/seed-8.results.json" \
  > "$out/seed-8.txt" 2> "$out/seed-8.log" || { tail -30 "$out/seed-8.log" >&2; fail "the seed run failed"; }
cat "$out/seed-8.txt"
grep -E "offloaded [0-9]+/[0-9]+ layers to GPU" "$out/seed-8.log" | head -1 || true
grep -E "${device}0 KV buffer size" "$out/seed-8.log" | head -1 \
  || fail "llama.cpp did not put the KV cache on ${device}0 (see $out/seed-8.log)"

step "the core integration tests with every layer on ${device}0 (engine, outcomes, sweeps)"
"$cargo" test --features "$backend" "${tests[@]}" -- --test-threads 1

if [ -n "${KVLAB_BENCH_MODEL:-}" ]; then
  step "kvlab bench --quick on $KVLAB_BENCH_MODEL"
  "$bin" bench --model "$KVLAB_BENCH_MODEL" --quick | tee "$out/bench.txt"
fi

step "passed"
