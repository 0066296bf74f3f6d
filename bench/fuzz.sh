#!/usr/bin/env bash
# Fuzzing (issue 16): every cargo-fuzz target in fuzz/ for a fixed number of executions, as
# one JSON object. Targets: wire (every wire message type from hostile bytes, >= 10 million
# runs), configs (master/agent TOML, Mesos credentials), mesos_http (v1 scheduler/executor
# call bodies, RecordIO streams), image_readers (MBR + FAT of a hostile image), update_log (the
# agent's update log as found on a damaged card). Target: no crash, no timeout, no OOM.
#
# Installs cargo-fuzz when missing. On a stable compiler the targets build with
# `--sanitizer none` (libFuzzer's coverage guidance, Rust's own checks, debug assertions);
# with a nightly one, with the address sanitizer. Corpora grow in target/fuzz-corpus/ and
# are kept between runs; crashes land in fuzz/artifacts/TARGET/ (reproduce with
# `cargo fuzz run -s none TARGET FILE`).
#
# Usage: bench/fuzz.sh [--short] [TARGET...]
#   --short: 20,000 runs each (a minute or two once built), to keep the script working.
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
if [ "${1:-}" = "--short" ]; then short=1; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(wire configs mesos_http image_readers update_log)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked -q
sanitizer=none
rustc --version | grep -q nightly && sanitizer=address
export CARGO_INCREMENTAL=0
(cd fuzz && cargo fuzz build -s "$sanitizer" 2>&1 | grep -E "^(error|warning: unused)" >&2 || true)

runs_for() {
  if [ $short = 1 ]; then echo 20000; return; fi
  case $1 in
    wire) echo 10000000 ;;
    configs|mesos_http) echo 2000000 ;;
    image_readers) echo 300000 ;;
    *) echo 100000 ;;
  esac
}

out=$(mktemp -d); trap 'rm -rf "$out"' EXIT

# image_readers starts from a real (tiny) Pi-style image: MBR, FAT boot partition, config.txt.
# Made here rather than committed: sfdisk, mkfs.vfat and mtools are what the image tests use.
seed_image() {
  local dir=target/fuzz-corpus/image_readers img
  img=$dir/seed-pi-boot.img
  [ -f "$img" ] && return
  command -v sfdisk >/dev/null && command -v mkfs.vfat >/dev/null && command -v mcopy >/dev/null || {
    echo "bench/fuzz.sh: no sfdisk/mkfs.vfat/mcopy, image_readers starts without a seed" >&2; return; }
  mkdir -p "$dir"
  truncate -s 1100K "$img"
  printf 'label: dos\nlabel-id: 0x1234abcd\nstart=64, size=2048, type=c, bootable\n' | sfdisk -q "$img"
  mkfs.vfat --offset 64 -n BOOTFS "$img" 1024 >/dev/null 2>&1
  echo "arm_64bit=1" > "$out/config.txt"
  mcopy -i "$img@@32768" "$out/config.txt" ::config.txt
}
seed_image
for t in "${targets[@]}"; do
  corpus=target/fuzz-corpus/$t; mkdir -p "$corpus" "fuzz/artifacts/$t"
  seeds=fuzz/seeds/$t; [ -d "$seeds" ] || seeds=
  before=$(ls "fuzz/artifacts/$t" | wc -l)
  runs=$(runs_for "$t")
  start=$(date +%s.%N)
  set +e
  (cd fuzz && cargo fuzz run -s "$sanitizer" "$t" "../$corpus" ${seeds:+"../$seeds"} -- \
     -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) >"$out/$t.log" 2>&1
  rc=$?
  set -e
  end=$(date +%s.%N)
  after=$(ls "fuzz/artifacts/$t" | wc -l)
  python3 - "$t" "$runs" "$rc" "$start" "$end" "$before" "$after" "$out/$t.log" >>"$out/results" <<'PY'
import json, re, sys
t, runs, rc, start, end, before, after, log = sys.argv[1:]
text = open(log, errors="replace").read()
done = re.findall(r"Done (\d+) runs in (\d+) second", text)
stat = dict(re.findall(r"stat::(\w+):\s+(\d+)", text))
new = int(after) - int(before)
print(json.dumps({
  "target": t, "runs_asked": int(runs), "runs": int(done[-1][0]) if done else int(stat.get("number_of_executed_units", 0)),
  "secs": round(float(end) - float(start), 1),
  "execs_per_s": round(int(done[-1][0]) / max(float(end) - float(start), 0.001)) if done else 0,
  "coverage_edges": int((re.findall(r"cov: (\d+)", text) or [0])[-1]),
  "exit_code": int(rc), "new_artifacts": new,
  "crashed": int(rc) != 0 or new > 0,
  "tail": text.strip().splitlines()[-12:] if (int(rc) != 0 or new > 0) else [],
}))
PY
done
python3 - "$out/results" "$sanitizer" "$short" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(json.dumps({
  "sanitizer": sys.argv[2], "short": sys.argv[3] == "1",
  "targets": rows,
  "target": "no crash, timeout or OOM in any target; wire >= 10,000,000 runs",
  "met": all(not r["crashed"] for r in rows) and
         (sys.argv[3] == "1" or all(r["runs"] >= 10_000_000 for r in rows if r["target"] == "wire")),
}, indent=1))
PY
