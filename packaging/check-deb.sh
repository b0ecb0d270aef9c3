#!/usr/bin/env bash
# Checks a kvlab .deb without installing it (no root): unpacks it into a scratch root with
# dpkg-deb -x, checks its control fields and file layout, runs the unpacked binary on MODEL, and
# validates the desktop entry and AppStream metainfo where desktop-file-validate / appstreamcli exist.
# Usage: check-deb.sh MODEL.gguf DEB   (make package-check)
set -euo pipefail
model="${1:?usage: check-deb.sh MODEL.gguf DEB}"
deb="${2:?usage: check-deb.sh MODEL.gguf DEB}"
repo="$(cd "$(dirname "$0")/.." && pwd)"

fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
ok() { echo "check-deb: ok   $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

have dpkg-deb || fail "dpkg-deb is needed (Debian/Ubuntu)"
[ -f "$deb" ] || fail "no such .deb: $deb"
[ -f "$model" ] || fail "no such model: $model"
version="$(cd "$repo" && ${CARGO:-cargo} pkgid)"
version="${version##*[#@]}"   # path+file:///…#kvlab@VERSION (older cargo: …#VERSION)

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

# The control file
control="$(dpkg-deb -I "$deb")" || fail "dpkg-deb -I cannot read $deb"
grep -q '^ Package: kvlab$' <<<"$control" || fail "the control file does not say Package: kvlab"
grep -q '^ Depends: ' <<<"$control" || fail "the control file has no Depends line"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Version)" = "$version-1" ] || fail "Version is '$(field Version)', expected $version-1 (Cargo.toml)"
depends="$(field Depends)"
grep -q 'libc6' <<<"$depends" || fail "Depends lacks libc6 (\$auto found no shared libraries?): $depends"
[ "$(field Section)" = science ] || fail "Section is '$(field Section)', expected science"
ok "control: Package kvlab, Version $version-1, Depends: $depends"
# Every dependency (or one of each alternative) must be a package apt knows, where apt has lists.
if have apt-cache && apt-cache show libc6 >/dev/null 2>&1; then
  tr ',' '\n' <<<"$depends" | while read -r alternatives; do
    found=""
    IFS='|' read -ra alts <<<"$alternatives"
    for alt in "${alts[@]}"; do
      name="$(awk '{ print $1 }' <<<"$alt")"
      if apt-cache show "$name" >/dev/null 2>&1; then found="$name"; break; fi
    done
    [ -n "$found" ] || fail "no package named in '$alternatives' is known to apt"
  done
  ok "every dependency is known to apt"
fi

# The files, at their installed paths
dpkg-deb -x "$deb" "$root" || fail "dpkg-deb -x cannot unpack $deb"
expect=(
  usr/bin/kvlab
  usr/share/applications/kvlab.desktop
  usr/share/metainfo/org.kvlab.kvlab.metainfo.xml
  usr/share/mime/packages/kvlab.xml
  usr/share/icons/hicolor/scalable/apps/kvlab.svg
  usr/share/doc/kvlab/README.md
  usr/share/doc/kvlab/copyright
)
for size in 16 24 32 48 64 128 256 512; do expect+=("usr/share/icons/hicolor/${size}x${size}/apps/kvlab.png"); done
for f in "${expect[@]}"; do [ -s "$root/$f" ] || fail "$f is missing from the package"; done
[ -x "$root/usr/bin/kvlab" ] || fail "usr/bin/kvlab is not executable"
for size in 16 24 32 48 64 128 256 512; do
  png="$root/usr/share/icons/hicolor/${size}x${size}/apps/kvlab.png"
  dims="$(python3 -c 'import struct, sys; d = open(sys.argv[1], "rb").read(24); print("%dx%d" % struct.unpack(">II", d[16:24]) if d[1:4] == b"PNG" else "not-a-png")' "$png")"
  [ "$dims" = "${size}x${size}" ] || fail "$png is $dims, expected ${size}x${size}"
done
grep -q 'License: MIT' "$root/usr/share/doc/kvlab/copyright" || fail "the copyright file does not state the MIT license"
for f in usr/share/applications/kvlab.desktop usr/share/metainfo/org.kvlab.kvlab.metainfo.xml; do
  cmp -s "$root/$f" "$repo/packaging/linux/$(basename "$f")" || fail "$f differs from packaging/linux"
done
cmp -s "$root/usr/share/mime/packages/kvlab.xml" "$repo/packaging/linux/kvlab-mime.xml" || fail "the MIME XML differs from packaging/linux"
ok "${#expect[@]} files at their paths (binary, desktop entry, metainfo, MIME type, 8 PNG sizes + SVG, docs)"
installed_kib="$(field Installed-Size)"
ok "installed size $installed_kib KiB, .deb $(du -k "$deb" | cut -f1) KiB"

# The installed binary runs
bin="$root/usr/bin/kvlab"
v="$("$bin" --version)" || fail "kvlab --version failed"
grep -q "^kvlab $version\$" <<<"$v" || fail "kvlab --version does not print kvlab $version: $v"
grep -q "backends" <<<"$v" || fail "kvlab --version does not list the backends: $v"
ok "kvlab --version: $(tr '\n' ';' <<<"$v" | sed 's/;$//; s/;/; /g')"
info="$("$bin" inspect "$model" 2>&1)" || { echo "$info" >&2; fail "kvlab inspect $model failed"; }
grep -Eq '^architecture +llama$' <<<"$info" || { echo "$info" >&2; fail "kvlab inspect does not report the architecture llama"; }
ok "kvlab inspect $(basename "$model"): architecture llama"

# Validators, where installed
if have desktop-file-validate; then
  desktop-file-validate "$root/usr/share/applications/kvlab.desktop" || fail "desktop-file-validate"
  ok "desktop-file-validate"
else
  echo "check-deb: skip desktop-file-validate (apt-get install desktop-file-utils)"
fi
if have appstreamcli; then
  appstreamcli validate --no-net "$root/usr/share/metainfo/org.kvlab.kvlab.metainfo.xml" || fail "appstreamcli validate"
  ok "appstreamcli validate --no-net"
else
  echo "check-deb: skip appstreamcli validate (apt-get install appstream)"
fi
if have update-mime-database; then
  cp -r "$root/usr/share/mime" "$root/mime-check"
  update-mime-database "$root/mime-check" >/dev/null 2>&1 || fail "update-mime-database rejects the MIME XML"
  grep -q 'application/x-kvlab-session' "$root/mime-check/globs2" || fail "the MIME database has no *.kvlab glob"
  ok "update-mime-database: *.kvlab is application/x-kvlab-session"
fi
echo "check-deb: $deb passed"
