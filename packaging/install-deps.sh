#!/usr/bin/env bash
# Installs what building kvlab needs, only when missing: a C/C++ toolchain, cmake and libclang
# (llama.cpp is built from source by llama-cpp-sys-2), and python3 with pip (to fetch the demo
# model). Debian/Ubuntu through apt-get, macOS through Homebrew.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
has_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  if have ldconfig && ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then return 0; fi
  ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && return 0
  [ "$(uname)" = Darwin ] && return 0 # Xcode's command line tools ship libclang
  return 1
}

if ! have cargo; then
  echo "kvlab needs Rust (cargo). Install it from your package manager or with rustup, then re-run." >&2
  exit 1
fi

case "$(uname)" in
  Darwin)
    have cmake || need+=(cmake)
    if [ ${#need[@]} -gt 0 ]; then
      have brew || { echo "Please install Homebrew, or install: ${need[*]}" >&2; exit 1; }
      echo "Installing ${need[*]} with Homebrew"
      brew install "${need[@]}"
    fi
    ;;
  *)
    have cmake || need+=(cmake)
    have c++ || need+=(g++)
    has_libclang || need+=(clang libclang-dev)
    have python3 || need+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
    # The desktop app (X11/Wayland, OpenGL) and its window check under Xvfb.
    [ -e /usr/include/X11/Xlib.h ] || need+=(libx11-dev)
    have Xvfb || need+=(xvfb)
    have import || need+=(imagemagick)
    compgen -G "/usr/lib/*/dri/swrast_dri.so" >/dev/null || need+=(libgl1-mesa-dri)
    [ -e /usr/include/xkbcommon/xkbcommon.h ] || need+=(libxkbcommon-dev)
    # The UI snapshot tests render with wgpu on Mesa's software Vulkan driver (lavapipe).
    compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null || need+=(mesa-vulkan-drivers)
    # The HTML report test opens reports in headless Chromium.
    have chromium || have chromium-browser || need+=(chromium)
    if [ ${#need[@]} -gt 0 ]; then
      have apt-get || { echo "Please install: ${need[*]} (cmake, a C++ compiler, libclang, python3-pip)" >&2; exit 1; }
      sudo=""
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      echo "Installing ${need[*]} with apt-get"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    ;;
esac

# The Windows-only code (src/console.rs) is compiled for Windows by tests/packaging.rs: its
# standard library comes with rustup (about 30 MB, once). Not fatal offline: the test says so.
if have rustup && ! rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-gnu; then
  echo "Adding Rust's x86_64-pc-windows-gnu target (to check kvlab's Windows code)"
  rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1 \
    || echo "note: could not add the x86_64-pc-windows-gnu target; its test will be skipped" >&2
fi
