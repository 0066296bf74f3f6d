#!/usr/bin/env bash
# Leader failover of replicated masters (issue 18): three real `bramble-master` processes with
# `[ha]` on loopback and real agents given every master; the serving leader is SIGKILLed
# KILLS times (each killed master restarted and caught up before the next kill, so a majority
# is always up). Reports median and max of SIGKILL → a surviving master welcomes a hello and
# SIGKILL → every agent registered again with the new leader (target: 2000 ms). One JSON
# object. Release binaries; the CI form is tests/tests/ha_pi.rs (5 kills during a pi job,
# debug build).
# Masters heartbeat at HEARTBEAT_MS (default 1000, the shipped default; the tests use 200).
# Usage: bench/ha.sh [--short | --debug] [KILLS] [AGENTS] [HEARTBEAT_MS]
#   (default 20 kills, 2 agents, 1000 ms)
#   --debug: the debug binaries the tests use.
#   --short: debug binaries, 3 kills: keeps the script working.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
kills=20
case "${1:-}" in
  --short) profile=(); kills=3; shift ;;
  --debug) profile=(); shift ;;
esac
exec cargo run --quiet --locked "${profile[@]}" -p bramble-tests --bin bench-ha -- \
  "${1:-$kills}" "${2:-2}" "${3:-1000}"
