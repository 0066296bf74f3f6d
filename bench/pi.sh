#!/usr/bin/env bash
# Pi benchmarks (issue 3): kernel vs the textbook C loop, and the pi job on a cluster vs the
# no-scheduler control on the same number of threads (K agents of one CPU each vs K threads). Prints one JSON object.
# Every target is a ratio against a control measured in the same run.
#   bench/pi.sh [TERMS_FOR_EFFICIENCY]     (default 2e10 ≈ 10 s on one of this machine's cores)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p bramble
B=target/release/bramble
N=${1:-2e10}
T=64
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cc -O3 -o "$tmp/leibniz" bench/leibniz.c
c_ref=$("$tmp/leibniz" 1000000000)
k1=$($B bench kernel --threads 1 --terms 4e9 --tasks 16)
k1e=$($B bench kernel --threads 1 --terms "$N" --tasks $T)
c1=$($B demo --agents 1 --cpus-per-agent 1 --terms "$N" --tasks $T --json)
k2e=$($B bench kernel --threads 2 --terms "$N" --tasks $T)
c2=$($B demo --agents 2 --cpus-per-agent 1 --terms "$N" --tasks $T --json)
python3 - "$c_ref" "$k1" "$k1e" "$c1" "$k2e" "$c2" <<'PY'
import json, sys
c_ref, k1, k1e, c1, k2e, c2 = (json.loads(a) for a in sys.argv[1:])
print(json.dumps({
  "kernel_vs_c": {"c_terms_per_s": c_ref["terms_per_s"], "rust_terms_per_s_1_thread": k1["terms_per_s"],
                  "speedup": k1["terms_per_s"] / c_ref["terms_per_s"], "target": ">= 2.0"},
  "parallel_efficiency": [
    {"k": 1, "control_wall_s": k1e["wall_s"], "cluster_wall_s": c1["wall_s"], "ratio": c1["wall_s"] / k1e["wall_s"], "target": "<= 1.1"},
    {"k": 2, "control_wall_s": k2e["wall_s"], "cluster_wall_s": c2["wall_s"], "ratio": c2["wall_s"] / k2e["wall_s"], "target": "<= 1.1"},
  ],
  "bit_identical": k1e["pi"] == c1["pi"] == k2e["pi"] == c2["pi"],
  "pi": c2["pi"],
}, indent=1))
PY
