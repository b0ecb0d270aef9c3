# Sourced by the packaging scripts: sets `version` (kvlab's, from Cargo.toml) and `target_dir`
# (cargo's target directory), through `cargo metadata`. Needs `die` and `$cargo` defined.
command -v python3 >/dev/null 2>&1 || die "python3 is needed to read cargo metadata (run make deps)"
meta="$("$cargo" metadata --format-version 1 --no-deps)" || die "cargo metadata failed: is Rust installed (make deps)?"
read -r version target_dir < <(python3 -c '
import json, sys
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "kvlab")
print(p["version"], m["target_directory"])' <<<"$meta")
[ -n "$version" ] || die "could not read kvlab's version from Cargo.toml"
