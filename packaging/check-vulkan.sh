#!/usr/bin/env bash
# The Vulkan build of kvlab on Mesa's software Vulkan driver (lavapipe), no GPU needed: builds with
# --features vulkan into target/vulkan and runs the core integration tests with the model and its
# KV cache on the Vulkan device. See check-backend.sh.
#   bash packaging/check-vulkan.sh [MODEL.gguf]     (make check-vulkan)
exec bash "$(dirname "$0")/check-backend.sh" vulkan "$@"
