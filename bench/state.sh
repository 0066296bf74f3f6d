#!/usr/bin/env bash
# A framework's key/value state store (issue 18): write latency from the SDK call to the
# `state_changed` that confirms the write (committed by the master: with `[ha]`, on a
# majority), one write at a time, plain puts and compare-and-sets alternating, on a throwaway
# cluster of 1 master and of 3 replicated masters on loopback, interleaved (1, 3, 1, 3, ...)
# so drift on this shared machine hits both; each figure is the median over the repeats. One
# JSON object: both runs' p50/p99 and the 3-master/1-master ratios (the cost of replication).
# Usage: bench/state.sh [--short] [WRITES, default 1000] [BYTES, default 128]
#   --short: debug binaries (the ones CI builds anyway), 40 writes, one repeat: keeps the
#   script working (run by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
if [ "${1:-}" = --short ]; then short=1; shift; fi
if [ "$short" = 1 ]; then
  cargo build -q --locked -p bramble
  B=target/debug; writes=${1:-40}; repeats=1
else
  cargo build --release -q --locked -p bramble
  B=target/release; writes=${1:-1000}; repeats=3
fi
exec python3 - "$B/bramble" "$writes" "${2:-128}" "$repeats" <<'PY'
import json, statistics, subprocess, sys

bramble, writes, size, repeats = sys.argv[1], *map(int, sys.argv[2:5])

def run(masters):
    out = subprocess.run([bramble, "bench", "state", "--masters", str(masters),
                          "--writes", str(writes), "--bytes", str(size)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"bramble bench state --masters {masters} failed:\n{out.stderr[-3000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if report["refused"]:
        raise SystemExit(f"{report['refused']} state writes refused: {report}")
    return report

runs = {1: [], 3: []}
for _ in range(repeats):
    for m in (1, 3):
        runs[m].append(run(m))

def med(m, kind, field):
    return statistics.median(r[kind][field] for r in runs[m])

def figures(m):
    return {
        "put_p50_ms": med(m, "put", "p50_ms"), "put_p99_ms": med(m, "put", "p99_ms"),
        "cas_p50_ms": med(m, "compare_and_set", "p50_ms"),
        "cas_p99_ms": med(m, "compare_and_set", "p99_ms"),
        "writes_per_s": statistics.median(r["writes_per_s"] for r in runs[m]),
    }

one, three = figures(1), figures(3)
print(json.dumps({
    "writes": writes, "value_bytes": size, "repeats": repeats,
    "single_master": one, "replicated_3_masters": three,
    "ratio_3_to_1": {k: round(three[k] / one[k], 2) if one[k] else None for k in one},
}))
PY
