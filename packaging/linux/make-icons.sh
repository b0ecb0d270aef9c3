#!/usr/bin/env bash
# Renders assets/kvlab.svg into the hicolor icon sizes under $1 (default target/icons):
# $1/hicolor/SIZExSIZE/apps/kvlab.png and $1/hicolor/scalable/apps/kvlab.svg.
# Needs rsvg-convert (librsvg2-bin) or ImageMagick's convert.
set -euo pipefail
out="${1:-target/icons}"
svg="$(dirname "$0")/../../assets/kvlab.svg"
for size in 16 24 32 48 64 128 256 512; do
  dir="$out/hicolor/${size}x${size}/apps"
  mkdir -p "$dir"
  if command -v rsvg-convert >/dev/null; then
    rsvg-convert -w "$size" -h "$size" "$svg" -o "$dir/kvlab.png"
  else
    convert -background none -density 384 "$svg" -resize "${size}x${size}" "$dir/kvlab.png"
  fi
done
mkdir -p "$out/hicolor/scalable/apps"
cp "$svg" "$out/hicolor/scalable/apps/kvlab.svg"
echo "icons in $out/hicolor"
