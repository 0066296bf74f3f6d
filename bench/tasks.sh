#!/usr/bin/env bash
# Task throughput (issue 3): 10,000 no-op tasks through the custom executor path, and 1,000
# `true` shell tasks (fork/exec bound). Prints one JSON object. Status updates stay durable
# (fsync'd before they are sent) throughout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p bramble
B=target/release/bramble
tiny=$($B bench tasks --path executor --count "${1:-10000}")
cmd=$($B bench tasks --path command --count "${2:-1000}")
python3 - "$tiny" "$cmd" <<'PY'
import json, sys
tiny, cmd = (json.loads(a) for a in sys.argv[1:])
print(json.dumps({"tiny_executor_tasks": dict(tiny, target="tasks_per_s >= 5000"),
                  "command_tasks": cmd}, indent=1))
PY
