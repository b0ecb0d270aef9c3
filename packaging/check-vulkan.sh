#!/usr/bin/env bash
# Builds kvlab with llama.cpp's Vulkan backend and runs the core integration tests on Mesa's
# software Vulkan driver (lavapipe), so the Vulkan build is checked on a machine without a GPU.
# The model's layers and its KV cache then live on the "GPU" (lavapipe's device memory), and KV
# surgery goes through llama.cpp's state copy to host memory, the path a real GPU takes.
#
#   bash packaging/check-vulkan.sh [MODEL.gguf]
#
# Debian/Ubuntu packages it needs (installed when missing): libvulkan-dev glslc spirv-headers
# (to build llama.cpp's shaders) and mesa-vulkan-drivers (lavapipe). The build goes to
# target/vulkan so it never replaces the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."

model="${1:-${KVLAB_TEST_MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/kvlab/models/SmolLM2-135M-Instruct.Q4_1.gguf}}"
[ -f "$model" ] || { echo "check-vulkan: no model at $model (run make model)" >&2; exit 1; }
started=$(date +%s)
step() { echo "== check-vulkan: $* ($(( $(date +%s) - started )) s)"; }

need=()
[ -e /usr/include/vulkan/vulkan.h ] || need+=(libvulkan-dev)
command -v glslc >/dev/null 2>&1 || need+=(glslc)
compgen -G "/usr/share/cmake/SPIRV-Headers/*.cmake" >/dev/null || need+=(spirv-headers)
compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null || need+=(mesa-vulkan-drivers)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { echo "check-vulkan: please install ${need[*]}" >&2; exit 1; }
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  step "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Only lavapipe: the check must not depend on whatever GPU the machine has.
VK_ICD_FILENAMES="$(compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" | head -1)"
export VK_ICD_FILENAMES
export CARGO_TARGET_DIR="$PWD/target/vulkan"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$PWD/target/runtime}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
export KVLAB_TEST_MODEL="$model"
cargo="${CARGO:-cargo}"

step "building kvlab with --features vulkan"
"$cargo" build --features vulkan
bin="$CARGO_TARGET_DIR/debug/kvlab"

step "the build and the device"
"$bin" --version | tee target/vulkan/version.txt
grep -q "backends .*vulkan" target/vulkan/version.txt || { echo "check-vulkan: kvlab --version does not list vulkan" >&2; exit 1; }
"$bin" inspect "$model" 2>/dev/null | tee target/vulkan/inspect.txt
grep -q "Vulkan0: " target/vulkan/inspect.txt || { echo "check-vulkan: llama.cpp sees no Vulkan device" >&2; exit 1; }
grep -q "KV cache *Vulkan0 memory (all 30 layers)" target/vulkan/inspect.txt || { echo "check-vulkan: the KV cache would not be on the Vulkan device" >&2; exit 1; }

step "a seed run, with llama.cpp's own word on where the KV cache is"
spec=target/vulkan/seed-8.json
sed 's/"max_tokens": *[0-9]*/"max_tokens": 8/' assets/experiments/seed-short.json > "$spec"
"$bin" -vv run "$spec" --model "$model" --out target/vulkan/seed-8.results.json \
  > target/vulkan/seed-8.txt 2> target/vulkan/seed-8.log
cat target/vulkan/seed-8.txt
grep -E "Vulkan0 KV buffer size" target/vulkan/seed-8.log | head -1
grep -qE "Vulkan0 KV buffer size" target/vulkan/seed-8.log || { echo "check-vulkan: llama.cpp did not put the KV cache on Vulkan0 (see target/vulkan/seed-8.log)" >&2; exit 1; }
grep -E "offloaded [0-9]+/[0-9]+ layers to GPU" target/vulkan/seed-8.log | head -1

step "the core integration tests on lavapipe (engine, outcomes, sweeps)"
"$cargo" test --features vulkan --test engine --test outcomes --test sweep -- --test-threads 1

step "passed"
