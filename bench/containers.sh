#!/usr/bin/env bash
# Container-image tasks (issue 20) next to plain command tasks, as one JSON object: a real
# master and one agent (cgroups, crun) in one test process, tasks launched one at a time and
# alternating plain `true` with `true` in a busybox image built from the host's static
# busybox (no registry): launch->RUNNING and launch->FINISHED p50/p99 as the framework sees
# them; then a running `sleep` task's processes and RSS plain and in the image (crun's monitor
# process is the container's overhead), and the crun processes left once no container runs
# (the idle cost: none). Root, crun and busybox-static needed (apt-get install crun
# busybox-static); the test says SKIP otherwise and this script fails.
#
# Usage: bench/containers.sh [--short] [N tasks per kind, default 100]
#   --short: debug build (what CI builds anyway), N=5: seconds, run by CI to keep the script
#   working; its figures are not the release ones.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
n=100
if [ "${1:-}" = --short ]; then profile=(); n=5; shift; fi
n=${1:-$n}
out=$(BENCH_N=$n cargo test -q --locked "${profile[@]}" -p bramble-tests --test container_bench \
  -- --ignored --nocapture --test-threads=1 2>&1) || { echo "$out" | tail -40 >&2; exit 1; }
json=$(echo "$out" | sed -n 's/^BENCH_JSON //p' | tail -1)
if [ -z "$json" ]; then
  echo "$out" | grep -E 'SKIP|panicked' >&2 || echo "$out" | tail -20 >&2
  echo "bench/containers.sh: no measurement (see above)" >&2
  exit 1
fi
echo "$json"
