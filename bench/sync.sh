#!/usr/bin/env bash
# Benchmarks of `claudedl sync` against the bundled mock API (issue: Claude API sync).
#   1. 1,000,000 file entries, 1,000 per page: full listing + index update (--metadata-only)
#   2. a no-op incremental sync over that index (entries marked complete)
#   3. `claudedl ls` queries over that index
#   4. 10,000 files of 4 KiB synced from the mock, vs `aria2c -i list -j 16` from nginx
# Needs: a release build (cargo build --release --workspace), python3, /usr/bin/time (Debian
# `time`), nginx and aria2c (Debian `nginx`, `aria2`). Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/claudedl
MOCK=target/release/claudedl-mock
for tool in "$BIN" "$MOCK" /usr/bin/time python3 nginx aria2c; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool (build: cargo build --release --workspace; Debian: time nginx aria2)"; exit 2; }
done
work=$(mktemp -d /tmp/claudedl-bench-sync.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_mock() { # args → exports ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY
  "$MOCK" "$@" > "$work/mock.out" &
  pids+=($!)
  for _ in $(seq 100); do grep -q base_url "$work/mock.out" 2>/dev/null && break; sleep 0.05; done
  export ANTHROPIC_BASE_URL=$(sed -n 's/.*base_url=\([^ ]*\).*/\1/p' "$work/mock.out")
  export ANTHROPIC_API_KEY=$(sed -n 's/.*api_key=\([^ ]*\).*/\1/p' "$work/mock.out")
}
# The mock sets no request limit; this measures claudedl's own speed, not the API's budget
# (which API commands otherwise pace at 50 requests/min by default).
export CLAUDEDL_RPM=1000000
timed() { # label, command… → prints "label: wall s, peak RSS MiB"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/last.out"
  read -r wall rss < "$work/time"
  printf '| %s | %s s | %s MiB |\n' "$label" "$wall" "$((rss / 1024))"
}

echo "| measurement | wall | peak RSS |"
echo "| --- | --- | --- |"
start_mock --files 1000000 --content-bytes 16
timed "list 1,000,000 entries + index (sync --metadata-only --full)" \
  "$BIN" sync --data-dir "$work/big" --files-only --metadata-only --full --json
python3 - "$work/big/meta/index.sqlite" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE files SET state = 'complete'")
db.commit()
PY
timed "no-op incremental sync over 1,000,000 complete entries" \
  "$BIN" sync --data-dir "$work/big" --files-only --json
timed "ls --month 2026-05 --mime text/csv (1,000,000-entry index)" \
  "$BIN" ls --data-dir "$work/big" --month 2026-05 --mime text/csv
echo "  (ls printed $(wc -l < "$work/last.out") rows)"
timed "ls --name '*.csv' --limit 100" "$BIN" ls --data-dir "$work/big" --name '*.csv' --limit 100
timed "ls (all 1,000,000 rows, to /dev/null)" "$BIN" ls --data-dir "$work/big"

echo
echo "| 10,000 files × 4 KiB | wall | files/s |"
echo "| --- | --- | --- |"
start_mock --files 10000 --content-bytes 4096
/usr/bin/time -f "%e" -o "$work/time" "$BIN" sync --data-dir "$work/small" --files-only -j 16 --json > "$work/small.json"
wall=$(cat "$work/time")
downloaded=$(python3 -c "import json,sys; print(json.load(open('$work/small.json'))['downloaded'])")
printf '| claudedl sync -j 16 (mock API, %s files) | %s s | %.0f |\n' "$downloaded" "$wall" "$(python3 -c "print($downloaded/$wall)")"

mkdir -p "$work/www" "$work/ng"
python3 - "$work/www" <<'PY'
import os, sys
for i in range(10000):
    with open(os.path.join(sys.argv[1], f"f{i:05}.bin"), "wb") as f:
        f.write(os.urandom(4096))
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/ng/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; error_log $work/ng/error.log; pid $work/ng/pid;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work/ng; proxy_temp_path $work/ng; fastcgi_temp_path $work/ng;
  uwsgi_temp_path $work/ng; scgi_temp_path $work/ng;
  server { listen 127.0.0.1:$port; root $work/www; } }
CONF
nginx -c "$work/ng/nginx.conf" -p "$work/ng" &
pids+=($!)
sleep 0.3
for i in $(seq -f "%05g" 0 9999); do echo "http://127.0.0.1:$port/f$i.bin"; done > "$work/list.txt"
/usr/bin/time -f "%e" -o "$work/time" aria2c -q -i "$work/list.txt" -j 16 -d "$work/aria" --file-allocation=none
wall=$(cat "$work/time")
printf '| aria2c -i list -j 16 (nginx, 10000 files) | %s s | %.0f |\n' "$wall" "$(python3 -c "print(10000/$wall)")"
/usr/bin/time -f "%e" -o "$work/time" "$BIN" get -i "$work/list.txt" -d "$work/get" -j 16 -q
wall=$(cat "$work/time")
printf '| claudedl get -i list -j 16 (nginx, 10000 files) | %s s | %.0f |\n' "$wall" "$(python3 -c "print(10000/$wall)")"
