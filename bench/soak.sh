#!/usr/bin/env bash
# Fault soak of `claudedl sync` (issue 10): a few hundred files from the mock API answering 20 %
# of content bodies with a reset at a random byte, 5 % of requests with 503 and 5 % with 529,
# under a request limit; the sync is killed with SIGKILL at a random moment KILLS times, then
# run to the end. Reports whether every file is correct (SHA-256 against a second, well-behaved
# mock serving the same generated files, and `claudedl verify`), bytes fetched ÷ bytes needed
# (the mock's /_mock/stats), and whether any run hung (every run is bounded: a killed run by its
# kill, a finishing run by `timeout RUN_LIMIT`). Not part of the test suite; a few minutes.
#
#   bench/soak.sh                    # release binaries (cargo build --release --workspace)
#   PROFILE=debug bench/soak.sh      # debug binaries (cargo build --workspace)
#
# Knobs (environment): FILES=300 BYTES=131072 KILLS=20 SEED=1 RUN_LIMIT=60 FINISH_RUNS=3
# RESET=0.2 R503=0.05 R529=0.05 RPM=1200 (the mock's limit; claudedl is paced at 1.25× that,
# so it meets 429s). Needs python3 and coreutils `timeout`. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
BIN=target/$PROFILE/claudedl
MOCK=target/$PROFILE/claudedl-mock
FILES=${FILES:-300} BYTES=${BYTES:-131072} KILLS=${KILLS:-20} SEED=${SEED:-1}
RUN_LIMIT=${RUN_LIMIT:-60} FINISH_RUNS=${FINISH_RUNS:-3}
RESET=${RESET:-0.2} R503=${R503:-0.05} R529=${R529:-0.05} RPM=${RPM:-1200}
for tool in "$BIN" "$MOCK" python3 timeout; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool (PROFILE=$PROFILE: cargo build --workspace [--release])"; exit 2; }
done
work=$(mktemp -d /tmp/claudedl-soak.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_mock() { # name, args… → sets MOCK_URL (the key is in $work/NAME.out)
  "$MOCK" "${@:2}" > "$work/$1.out" 2> "$work/$1.err" &
  pids+=($!)
  for _ in $(seq 200); do grep -q base_url "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
  MOCK_URL=$(sed -n 's/.*base_url=\([^ ]*\).*/\1/p' "$work/$1.out")
}
common=(--files "$FILES" --content-bytes "$BYTES" --seed "$SEED")
start_mock faulty "${common[@]}" --reset-rate "$RESET" --503-rate "$R503" --529-rate "$R529" \
  --rpm "$RPM" --rpm-burst 20
faulty=$MOCK_URL
start_mock clean "${common[@]}"
clean=$MOCK_URL
export ANTHROPIC_BASE_URL=$faulty
export ANTHROPIC_API_KEY=$(sed -n 's/.*api_key=\([^ ]*\).*/\1/p' "$work/faulty.out")
export CLAUDEDL_RPM=$((RPM * 5 / 4))
data=$work/data
sync_args=(sync --data-dir "$data" --files-only -j 8 --overload-pause 2 --json)

alive() { # pid → whether it runs (not a zombie waiting to be reaped)
  [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

progress() { # → "raw files" "complete rows" of the data dir
  python3 - "$data" <<'PY'
import os, sqlite3, sys
root = sys.argv[1]
raw = sum(len(f) for _, _, f in os.walk(os.path.join(root, "raw")))
complete = 0
try:
    db = sqlite3.connect(f"file:{os.path.join(root, 'meta', 'index.sqlite')}?mode=ro", uri=True)
    complete = db.execute("SELECT count(*) FROM files WHERE state = 'complete'").fetchone()[0]
except sqlite3.Error:
    pass
print(raw, complete)
PY
}

echo "| run | outcome | wall s | raw files | complete rows |" > "$work/runs.md"
echo "| --- | --- | --- | --- | --- |" >> "$work/runs.md"
started=$(date +%s.%N)
killed=0 early=0
for i in $(seq "$KILLS"); do
  delay=$(python3 -c "import random; random.seed($SEED * 1000 + $i); print(round(random.uniform(0.3, 3.0), 2))")
  t0=$(date +%s.%N)
  "$BIN" "${sync_args[@]}" > "$work/run$i.json" 2> "$work/run$i.err" &
  pid=$!
  deadline=$(python3 -c "print($t0 + $delay)")
  while alive "$pid" && python3 -c "import sys,time; sys.exit(time.time() >= $deadline)"; do
    sleep 0.02
  done
  if alive "$pid"; then
    kill -9 "$pid"; outcome="SIGKILL after ${delay} s"; killed=$((killed + 1))
  else
    outcome="exited before the kill"; early=$((early + 1))
  fi
  set +e; wait "$pid" 2>/dev/null; code=$?; set -e
  [ "$outcome" = "exited before the kill" ] && outcome="exited $code before the kill at ${delay} s"
  wall=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
  echo "| kill $i | $outcome | $wall | $(progress | sed 's/ / | /') |" >> "$work/runs.md"
done

hung=0 finished=no
for i in $(seq "$FINISH_RUNS"); do
  t0=$(date +%s.%N)
  set +e
  timeout -k 5 "$RUN_LIMIT" "$BIN" "${sync_args[@]}" > "$work/finish$i.json" 2> "$work/finish$i.err"
  code=$?
  set -e
  wall=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
    outcome="HUNG (timeout ${RUN_LIMIT} s)"; hung=$((hung + 1))
  else
    outcome="exit $code"
  fi
  echo "| finish $i | $outcome | $wall | $(progress | sed 's/ / | /') |" >> "$work/runs.md"
  if [ "$code" -eq 0 ]; then finished=yes; break; fi
done
total_wall=$(python3 -c "print(round($(date +%s.%N) - $started, 1))")

set +e
"$BIN" verify --data-dir "$data" > "$work/verify.out" 2>&1
verify_code=$?
set -e
curl_stats() { python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1] + '/_mock/stats').read().decode())" "$1"; }
curl_stats "$faulty" > "$work/stats.json"

cat "$work/runs.md"
echo
python3 - "$data" "$clean" "$ANTHROPIC_API_KEY" "$work/stats.json" "$FILES" "$BYTES" <<PY
import hashlib, json, os, sqlite3, sys, urllib.request
root, clean, key, stats_path, files, size = sys.argv[1:7]
files, size = int(files), int(size)
db = sqlite3.connect(f"file:{os.path.join(root, 'meta', 'index.sqlite')}?mode=ro", uri=True)
rows = db.execute("SELECT id, state, path FROM files").fetchall()
def content(id):
    request = urllib.request.Request(f"{clean}/v1/files/{id}/content",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    return urllib.request.urlopen(request).read()
known = {hashlib.sha256(content(id)).digest() for id, _, _ in rows}
raw_files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "raw")) for f in fs]
def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()
raw_good = sum(digest(path) in known for path in raw_files)
correct = wrong = missing = 0
for id, state, path in rows:
    local = os.path.join(root, path) if path else None
    if state != "complete" or not local or not os.path.isfile(local):
        missing += 1
        continue
    same = digest(local) == hashlib.sha256(content(id)).digest()
    correct += same
    wrong += not same
stats = json.load(open(stats_path))
fetched = stats.get("body_bytes", {}).get("file_content", 0)
needed = files * size
rows_md = [
    ("runs killed with SIGKILL / ended before the kill", f"{$killed} / {$early}"),
    ("finishing runs (bounded by timeout $RUN_LIMIT s)", "$finished" == "yes" and "completed" or "did not complete"),
    ("runs that hung", "$hung"),
    ("files listed / complete in the index", f"{len(rows)} / {sum(r[1] == 'complete' for r in rows)} of {files}"),
    ("complete files correct (SHA-256 vs the mock) / wrong / not complete", f"{correct} / {wrong} / {missing}"),
    ("files in raw/ / of those, equal to a mock file", f"{len(raw_files)} / {raw_good}"),
    ("claudedl verify exit code", "$verify_code"),
    ("content bytes fetched ÷ needed", f"{fetched / needed:.2f} ({fetched:,} / {needed:,})"),
    ("content requests per file", f"{stats.get('by_route', {}).get('file_content', 0) / files:.2f}"),
    ("API requests by status", ", ".join(f"{k}: {v}" for k, v in stats["by_status"].items())),
    ("list requests", str(stats.get("by_route", {}).get("list_files", 0))),
    ("total wall time", "$total_wall s"),
]
print("| soak: $FILES files × $BYTES B, resets $RESET, 503 $R503, 529 $R529, limit $RPM/min, seed $SEED | |")
print("| --- | --- |")
for name, value in rows_md:
    print(f"| {name} | {value} |")
PY
