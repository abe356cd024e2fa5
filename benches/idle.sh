#!/usr/bin/env bash
# Idle cost: CPU and memory of `tailhook run` watching N idle files for S
# seconds (default 200 files, 60 s), beside `tail -F` on the same files over
# the same seconds as a baseline. Usage: benches/idle.sh [FILES] [SECONDS]
set -euo pipefail
files=${1:-200}
seconds=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
work=$(mktemp -d)
trap 'kill "$pid" "$tail_pid" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/logs"
for i in $(seq 1 "$files"); do echo "start $i" > "$work/logs/f$i.log"; done
cat > "$work/tailhook.toml" <<CONF
[agent]
state_dir = "state"
[rules]
paths = ["$root/rules"]
[[input]]
name = "idle"
paths = ["logs/*.log"]
[webhook.out]
url = "-"
CONF
"$root/target/release/tailhook" run -c "$work/tailhook.toml" >/dev/null 2>"$work/agent.log" &
pid=$!
tail -q -F "$work"/logs/*.log >/dev/null 2>&1 &
tail_pid=$!
sleep 3   # start-up and first scan are not idle cost
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(cpu "$pid"); tail_before=$(cpu "$tail_pid")
sleep "$seconds"
after=$(cpu "$pid"); tail_after=$(cpu "$tail_pid")
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
tail_rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$tail_pid/status")
tailed=$(grep -c "tailing file" "$work/agent.log" || true)
awk -v b="$before" -v a="$after" -v t="$ticks" -v s="$seconds" -v f="$files" -v r="$rss_kb" -v n="$tailed" 'BEGIN {
  cpu = (a - b) / t
  printf "idle: %d files (%d tailed) for %d s: %.2f CPU s (%.3f%% of one core), RSS %.1f MiB (targets at 1,000 files: <= 0.1%% of a core, RSS <= 30 MB)\n", f, n, s, cpu, 100 * cpu / s, r / 1024
}'
awk -v b="$tail_before" -v a="$tail_after" -v t="$ticks" -v s="$seconds" -v r="$tail_rss_kb" 'BEGIN {
  cpu = (a - b) / t
  printf "baseline tail -F, same files and seconds: %.2f CPU s (%.3f%% of one core), RSS %.1f MiB\n", cpu, 100 * cpu / s, r / 1024
}'
