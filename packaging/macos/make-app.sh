#!/usr/bin/env bash
# Builds kvlab.app (Metal backend) and a .dmg holding it, on macOS, into target/package/:
#   target/package/kvlab.app and target/package/kvlab-VERSION-ARCH.dmg
# Usage: packaging/macos/make-app.sh [EXTRA CARGO BUILD FLAGS...]
# Needs: Xcode command line tools (clang, sips, iconutil, hdiutil, codesign), cmake, Rust.
# The icon is rendered from assets/kvlab.svg with rsvg-convert (brew install librsvg), ImageMagick
# or Quick Look, whichever is present; without any the app is built without an icon.
# CODESIGN_IDENTITY="Developer ID Application: …" signs with a real identity (default: ad hoc).
# The version comes from Cargo.toml; LSMinimumSystemVersion from Info.plist.
set -euo pipefail

if [ "$(uname)" != Darwin ]; then
  echo "make-app.sh builds the macOS app and .dmg and only runs on macOS (this is $(uname))." >&2
  echo "On Linux use 'make package' (a .deb and an AppImage)." >&2
  exit 1
fi

cargo="${CARGO:-cargo}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
out="target/package"
die() { echo "make-app: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

. packaging/cargo-meta.sh   # version, target_dir
arch="$(uname -m)"
plist_src="packaging/macos/Info.plist"
min_macos="$(/usr/libexec/PlistBuddy -c 'Print :LSMinimumSystemVersion' "$plist_src")"
echo "make-app: kvlab $version ($arch), macOS >= $min_macos"

# 1. The binary, with the Metal backend, for the minimum macOS the Info.plist promises.
MACOSX_DEPLOYMENT_TARGET="$min_macos" "$cargo" build --release --features metal "$@" \
  || die "cargo build --release --features metal failed"
bin="$target_dir/release/kvlab"
if otool -L "$bin" | tail -n +2 | awk '{ print $1 }' | grep -Ev '^(/usr/lib/|/System/)' >&2; then
  echo "make-app: warning: kvlab links the libraries above, which are not part of macOS; the app will not run on Macs without them" >&2
fi

# 2. kvlab.app
app="$out/kvlab.app"
rm -rf "$app"
mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources"
install -m 755 "$bin" "$app/Contents/MacOS/kvlab"
sed "s/@VERSION@/$version/g" "$plist_src" >"$app/Contents/Info.plist"
plutil -lint "$app/Contents/Info.plist" >/dev/null || die "the generated Info.plist is not valid"
printf 'APPL????' >"$app/Contents/PkgInfo"
cp LICENSE README.md "$app/Contents/Resources/"

# 3. kvlab.icns from the SVG
icons="$out/macos-icon"
rm -rf "$icons"
mkdir -p "$icons/kvlab.iconset"
svg="assets/kvlab.svg"
png="$icons/kvlab-1024.png"
if have rsvg-convert; then rsvg-convert -w 1024 -h 1024 "$svg" -o "$png"
elif have magick; then magick -background none -density 384 "$svg" -resize 1024x1024 "$png"
elif have convert; then convert -background none -density 384 "$svg" -resize 1024x1024 "$png"
elif have qlmanage; then
  qlmanage -t -s 1024 -o "$icons" "$svg" >/dev/null 2>&1 || true
  if [ -f "$icons/kvlab.svg.png" ]; then mv "$icons/kvlab.svg.png" "$png"; fi
fi
if [ -s "$png" ] && have sips && have iconutil; then
  for size in 16 32 128 256 512; do
    sips -z "$size" "$size" "$png" --out "$icons/kvlab.iconset/icon_${size}x${size}.png" >/dev/null
    sips -z $((size * 2)) $((size * 2)) "$png" --out "$icons/kvlab.iconset/icon_${size}x${size}@2x.png" >/dev/null
  done
  iconutil -c icns "$icons/kvlab.iconset" -o "$app/Contents/Resources/kvlab.icns" || die "iconutil failed"
else
  echo "make-app: warning: no icon (needs rsvg-convert, ImageMagick or qlmanage to render the SVG, and sips + iconutil)" >&2
fi

# 4. Signature: ad hoc unless CODESIGN_IDENTITY names a real one (then notarize the .dmg separately).
if [ -n "${CODESIGN_IDENTITY:-}" ]; then
  codesign --force --sign "$CODESIGN_IDENTITY" --options runtime --timestamp "$app" || die "codesign failed"
else
  codesign --force --sign - --timestamp=none "$app" || die "codesign (ad hoc) failed"
fi

# 5. The .dmg: the app and a link to /Applications to drag it onto.
dmg="$out/kvlab-$version-$arch.dmg"
stage="$out/dmg-stage"
rm -rf "$stage" "$dmg"
mkdir -p "$stage"
cp -R "$app" "$stage/"
ln -s /Applications "$stage/Applications"
hdiutil create -volname "kvlab $version" -srcfolder "$stage" -ov -format UDZO "$dmg" >/dev/null \
  || die "hdiutil create failed"
rm -rf "$stage"

"$app/Contents/MacOS/kvlab" --version | grep -q "^kvlab $version" || die "the app's binary does not run"
echo "make-app: app  $app"
echo "make-app: dmg  $dmg ($(du -k "$dmg" | cut -f1) KiB)"
