#!/usr/bin/env bash
# Opens the real kvlab window under Xvfb on the seed experiment, runs it, takes a screenshot and
# checks it is not blank. Usage: window-check.sh MODEL [OUT.png]
# Needs (Debian): xvfb, imagemagick, and Mesa's GL (libgl1-mesa-dri); skipped where absent on macOS.
set -euo pipefail
model="${1:?usage: window-check.sh MODEL [OUT.png]}"
out="${2:-target/window-check.png}"
bin="${KVLAB_BIN:-target/debug/kvlab}"

if [ "$(uname)" = Darwin ]; then echo "window check: skipped on macOS"; exit 0; fi
for tool in Xvfb import convert; do
  command -v "$tool" >/dev/null || { echo "window check needs $tool (apt-get install xvfb imagemagick)" >&2; exit 1; }
done

display=":$((90 + RANDOM % 9))"
Xvfb "$display" -screen 0 2800x900x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
home="$(mktemp -d)"   # fresh settings: the seed experiment, no remembered model
log="$home/kvlab.log"
cleanup() { kill "${app:-}" "$xvfb" 2>/dev/null || true; rm -rf "$home"; }
trap cleanup EXIT
sleep 1

DISPLAY="$display" HOME="$home" XDG_DATA_HOME="$home/data" XDG_CONFIG_HOME="$home/config" \
  RUST_LOG="kvlab=info" "$bin" "$model" --run >"$log" 2>&1 &
app=$!

# Wait for the run to finish (the app logs it), at most 10 minutes.
for _ in $(seq 1 600); do
  grep -q "Run finished" "$log" 2>/dev/null && break
  kill -0 "$app" 2>/dev/null || { echo "kvlab exited early:" >&2; cat "$log" >&2; exit 1; }
  sleep 1
done
grep -q "Run finished" "$log" || { echo "the run did not finish in the window" >&2; cat "$log" >&2; exit 1; }
sleep 2
mkdir -p "$(dirname "$out")"
DISPLAY="$display" import -window root "$out"
# The screen is twice the window's width so that Xvfb's pointer, which rests in the middle of the
# screen, is not over the window (over a grid cell its top-10 tooltip would cover the grid): keep
# the window's part.
convert "$out" -crop 1400x900+0+0 +repage "$out"

# A blank or single-colour screen has (almost) no variation and few colours.
colors=$(convert "$out" -format '%k' info:)
stddev=$(convert "$out" -colorspace Gray -format '%[fx:standard_deviation]' info:)
echo "window check: $out has $colors colours, grey standard deviation $stddev"
awk -v c="$colors" -v s="$stddev" 'BEGIN { exit !(c > 50 && s > 0.02) }' || {
  echo "the window looks blank" >&2; exit 1; }
