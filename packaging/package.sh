#!/usr/bin/env bash
# Builds kvlab's Linux packages into target/package/:
#   - kvlab_VERSION-1_ARCH.deb, with cargo-deb (installed here if missing; config in Cargo.toml's
#     [package.metadata.deb]);
#   - kvlab.AppDir, and kvlab-VERSION-ARCH.AppImage from it when appimagetool is on PATH (or
#     $APPIMAGETOOL names it; $APPIMAGE_RUNTIME may name a runtime file for offline builds).
# Usage: package.sh [CARGO BUILD FLAGS...]   e.g. package.sh --features vulkan (make package FEATURES=vulkan)
# The version comes from Cargo.toml. PACKAGE_PROFILE (default release) names the cargo profile
# whose binary is packaged: CI packages the dev build its tests already compiled
# (PACKAGE_PROFILE=dev, make package-check PACKAGE_PROFILE=dev), which checks the packaging
# without a second full build of llama.cpp and egui; releases are always built with release.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0   # builds with rustc >= 1.85
cargo="${CARGO:-cargo}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
out="target/package"   # cargo-deb reads the icons from here (paths relative to the crate)

step=""
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then echo "package: FAILED${step:+ while $step} (exit $rc)" >&2; fi
}
trap on_exit EXIT
die() { echo "package: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
timed() { # timed LABEL CMD...: runs CMD and prints how long it took
  local label="$1" start=$SECONDS; shift
  step="$label"
  "$@"
  echo "package: $label took $((SECONDS - start)) s"
}

[ "$(uname)" = Linux ] || die "package.sh builds Linux packages; on macOS use packaging/macos/make-app.sh, on Windows packaging/windows/build-msi.ps1"
# Name, version and target directory, from Cargo.toml through cargo.
step="reading cargo metadata"
. packaging/cargo-meta.sh
arch="$(uname -m)"
echo "package: kvlab $version ($arch)${*:+, cargo flags: $*}"

# 1. cargo-deb
if ! "$cargo" deb --version >/dev/null 2>&1; then
  echo "package: installing cargo-deb $CARGO_DEB_VERSION (cargo install, once)"
  timed "installing cargo-deb" "$cargo" install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# 2. The binary (the release build unless PACKAGE_PROFILE says otherwise)
profile="${PACKAGE_PROFILE:-release}"
case "$profile" in
  release) timed "the release build" "$cargo" build --release "$@"; profile_dir=release ;;
  dev) timed "the dev build" "$cargo" build "$@"; profile_dir=debug ;;
  *) timed "the $profile build" "$cargo" build --profile "$profile" "$@"; profile_dir="$profile" ;;
esac
bin="$target_dir/$profile_dir/kvlab"
[ -x "$bin" ] || die "the $profile build did not produce $bin"

# 3. Icons (hicolor PNGs and the SVG)
step="rendering icons"
rm -rf "$out/icons"
mkdir -p "$out"
bash packaging/linux/make-icons.sh "$out/icons" >/dev/null || die "could not render the icons (packaging/linux/make-icons.sh needs rsvg-convert or ImageMagick)"

# 4. The .deb, with the license as a machine-readable Debian copyright file
step="writing the Debian copyright file"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: kvlab"
  echo
  echo "Files: *"
  echo "Copyright: $(sed -n 's/^Copyright (c) //p' LICENSE)"
  echo "License: MIT"
  sed -e 's/^$/./' -e 's/^/ /' LICENSE
} >"$out/copyright"
step="building the .deb"
rm -f "$out"/kvlab_*.deb
cargo_deb() { "$cargo" deb --no-build --profile "$profile" --output "$out/" >"$out/cargo-deb.log" 2>&1; }
timed "cargo deb" cargo_deb || { cat "$out/cargo-deb.log" >&2; die "cargo deb failed"; }
# cargo-deb warns that the dev profile is not for releases: that is what PACKAGE_PROFILE=dev says.
grep -i warning "$out/cargo-deb.log" | grep -v "dev profile is not supported" >&2 || true
debs=("$out"/kvlab_*.deb)
deb="${debs[0]}"
[ -f "$deb" ] || die "cargo deb did not write a .deb into $out"

# 5. The AppDir (always) and the AppImage (where appimagetool is available)
step="assembling the AppDir"
appdir="$out/kvlab.AppDir"
rm -rf "$appdir"
mkdir -p "$appdir/usr/bin" "$appdir/usr/lib" "$appdir/usr/share/applications" \
  "$appdir/usr/share/metainfo" "$appdir/usr/share/mime/packages" "$appdir/usr/share/icons" \
  "$appdir/usr/share/doc/kvlab"
install -m 755 "$bin" "$appdir/usr/bin/kvlab"
if have strip; then strip --strip-unneeded "$appdir/usr/bin/kvlab"; fi
# libgomp (llama.cpp's OpenMP) is not on every desktop; glibc, libstdc++ and the graphics stack
# are taken from the host, as AppImages do.
gomp="$(ldd "$bin" | awk '$1 == "libgomp.so.1" { print $3 }')"
if [ -n "$gomp" ]; then install -m 644 "$gomp" "$appdir/usr/lib/libgomp.so.1"; fi
install -m 644 packaging/linux/kvlab.desktop "$appdir/usr/share/applications/kvlab.desktop"
install -m 644 packaging/linux/org.kvlab.kvlab.metainfo.xml "$appdir/usr/share/metainfo/"
install -m 644 packaging/linux/kvlab-mime.xml "$appdir/usr/share/mime/packages/kvlab.xml"
cp -r "$out/icons/hicolor" "$appdir/usr/share/icons/"
install -m 644 README.md LICENSE "$appdir/usr/share/doc/kvlab/"
install -m 644 packaging/linux/kvlab.desktop "$appdir/kvlab.desktop"
install -m 644 "$out/icons/hicolor/256x256/apps/kvlab.png" "$appdir/kvlab.png"
ln -s kvlab.png "$appdir/.DirIcon"
cat >"$appdir/AppRun" <<'APPRUN'
#!/bin/sh
# kvlab AppImage entry point: the bundled binary, with the bundled libgomp.
HERE="$(dirname "$(readlink -f "$0")")"
export LD_LIBRARY_PATH="$HERE/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export XDG_DATA_DIRS="$HERE/usr/share:${XDG_DATA_DIRS:-/usr/local/share:/usr/share}"
exec "$HERE/usr/bin/kvlab" "$@"
APPRUN
chmod 755 "$appdir/AppRun"
"$appdir/AppRun" --version | grep -q "^kvlab $version" || die "the AppDir's AppRun does not run kvlab $version"
if have desktop-file-validate; then
  desktop-file-validate "$appdir/kvlab.desktop" >/dev/null || die "the AppDir's kvlab.desktop does not validate"
fi

appimagetool="${APPIMAGETOOL:-$(command -v appimagetool || true)}"
appimage=""
if [ -n "$appimagetool" ]; then
  [ -x "$appimagetool" ] || die "APPIMAGETOOL=$appimagetool is not an executable"
  appimage="$out/kvlab-$version-$arch.AppImage"
  rm -f "$appimage"
  runtime=()
  [ -n "${APPIMAGE_RUNTIME:-}" ] && runtime=(--runtime-file "$APPIMAGE_RUNTIME")
  timed "appimagetool" env ARCH="$arch" "$appimagetool" "${runtime[@]}" "$appdir" "$appimage"
  [ -f "$appimage" ] || die "appimagetool did not write $appimage"
fi

step=""
echo "package: .deb      $deb ($(du -k "$deb" | cut -f1) KiB)"
if [ -n "$appimage" ]; then
  echo "package: AppImage  $appimage ($(du -k "$appimage" | cut -f1) KiB)"
else
  echo "package: AppImage skipped: appimagetool is not on PATH (Debian does not package it; get it from https://github.com/AppImage/appimagetool/releases and re-run, or set APPIMAGETOOL=/path/to/appimagetool); the AppDir is complete at $appdir"
fi
