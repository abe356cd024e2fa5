#!/usr/bin/env bash
# tailhook test-rules vs fail2ban-regex (Debian package fail2ban) on the sshd
# lines of the generated corpus, with fail2ban's sshd filter and our sshd
# pack, in the same run. Needs the corpus from `cargo bench --bench
# rules_throughput` and `apt-get install fail2ban`.
# Usage: benches/fail2ban_compare.sh [LINES] (default 200000)
set -euo pipefail
lines=${1:-200000}
root=$(cd "$(dirname "$0")/.." && pwd)
corpus="$root/target/bench-corpus/mixed-50MB-10pct.log"
[ -f "$corpus" ] || { echo "run: cargo bench --bench rules_throughput (makes $corpus)"; exit 1; }
command -v fail2ban-regex >/dev/null || { echo "needs: apt-get install fail2ban"; exit 1; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
subset="$root/target/bench-corpus/sshd-subset.log"
grep ' sshd\[' "$corpus" | head -n "$lines" > "$subset"
echo "sshd subset: $(wc -l < "$subset") lines, $(du -h "$subset" | cut -f1)"

start=$(date +%s.%N)
f2b=$(fail2ban-regex "$subset" /etc/fail2ban/filter.d/sshd.conf 2>/dev/null | grep -E '^Lines:' || true)
f2b_secs=$(echo "$(date +%s.%N) - $start" | bc)
start=$(date +%s.%N)
ours=$("$root/target/release/tailhook" test-rules --json --rules "$root/rules/sshd.toml" "$subset" 2>&1 >/dev/null | grep -E '^Lines:')
ours_secs=$(echo "$(date +%s.%N) - $start" | bc)
echo "fail2ban-regex: ${f2b_secs}s  $f2b"
echo "tailhook test-rules: ${ours_secs}s  $ours"
echo "speed ratio (fail2ban-regex time / tailhook time): $(echo "scale=1; $f2b_secs / $ours_secs" | bc)"
