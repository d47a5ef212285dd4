#!/usr/bin/env bash
# Rate-limit benchmark (issue #4): claudedl's rate governor against a naive client that only
# backs off after a 429, both downloading 1,000 small files from the bundled mock API at 600
# requests/min, for at most DURATION seconds each. Scenarios (a fresh mock per run):
#   default  --rpm 600                   bucket capacity 600 (the mock's default: one minute)
#   strict   --rpm 600 --rpm-burst 10    capacity 10: the limit enforced about per second
#   lowered  strict, and the mock lowers the limit to 300/min halfway (--rpm-change-after)
# For each run it reads the mock's /_mock/stats window (reset just before the client starts,
# read just after it ends) and reports requests, 429s per 1,000 requests, achieved requests/min
# and utilisation = accepted / allowed (see bench/ratelimit_stats.py), as a Markdown table on
# stdout and in docs/benchmarks-ratelimit.md.
#
# Knobs (environment): DURATION=90  CLIENTS="naive claudedl"  SCENARIOS="default strict lowered"
#   SKIP_BUILD=1 (use the existing release build)  DOC=path (default docs/benchmarks-ratelimit.md;
#   DOC=- prints only)
# Needs: cargo, python3 (3.11, standard library), coreutils timeout. Loopback only; every wait
# and every run is bounded; everything started is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
knobs=""
for knob in DURATION CLIENTS SCENARIOS; do
  [ -n "${!knob:-}" ] && knobs+="$knob=\"${!knob}\" "
done
DURATION=${DURATION:-90}
CLIENTS=${CLIENTS:-naive claudedl}
SCENARIOS=${SCENARIOS:-default strict lowered}
DOC=${DOC:-docs/benchmarks-ratelimit.md}
BIN=target/release/claudedl
MOCK=target/release/claudedl-mock
HALF=$((DURATION / 2))
COMMAND="${knobs}bench/ratelimit.sh"
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src crates || echo "+changes")

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --workspace --quiet
fi
for tool in "$BIN" "$MOCK" python3 timeout; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool"; exit 2; }
done

work=$(mktemp -d /tmp/claudedl-bench-ratelimit.XXXXXX)
mock_pid=
client_pid=
cleanup() {
  for pid in $client_pid $mock_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mock_args() { # scenario → the mock's rate-limit flags
  case $1 in
    default) echo "--rpm 600" ;;
    strict) echo "--rpm 600 --rpm-burst 10" ;;
    lowered) echo "--rpm 600 --rpm-burst 10 --rpm-change-after $HALF:300" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}
goal_429() { [ "$1" = lowered ] && echo 5 || echo 1; }

start_mock() { # flags… → sets url, key, mock_pid
  "$MOCK" --files 1000 --content-bytes 2048 "$@" > "$work/mock.out" 2> "$work/mock.err" &
  mock_pid=$!
  for _ in $(seq 100); do grep -q base_url "$work/mock.out" 2>/dev/null && break; sleep 0.05; done
  url=$(sed -n 's/.*base_url=\([^ ]*\).*/\1/p' "$work/mock.out")
  key=$(sed -n 's/.*api_key=\([^ ]*\).*/\1/p' "$work/mock.out")
  case $url in http://127.0.0.1:*) ;; *) echo "the mock did not start: $(cat "$work/mock.err")"; exit 1 ;; esac
}
stop_mock() {
  kill "$mock_pid" 2>/dev/null || true
  wait "$mock_pid" 2>/dev/null || true
  mock_pid=
}

# claudedl's --rpm is new (issue #4): without it, claudedl runs with its defaults, labelled so.
rpm_flag=(--rpm 600)
claudedl_label="claudedl -j 16 --rpm 600"
if ! "$BIN" sync --help 2>/dev/null | grep -q -- '--rpm'; then
  rpm_flag=()
  claudedl_label="claudedl -j 16 (this build has no --rpm)"
fi

run_client() { # client, dir → runs it against $url in the background; sets label, client_pid
  local client=$1 dir=$2
  case $client in
    naive)
      label="naive (8 threads, backs off on 429)"
      ANTHROPIC_API_KEY=$key timeout -k 5 $((DURATION + 30)) \
        python3 bench/naive_client.py "$url" "$DURATION" --workers 8 > "$dir/naive.json" &
      ;;
    claudedl)
      label=$claudedl_label
      # INT at DURATION s: exit 130 means it was still running (expected), 0 that it finished.
      ANTHROPIC_API_KEY=$key timeout --preserve-status -k 10 -s INT "$DURATION" \
        "$BIN" sync --base-url "$url" --data-dir "$dir/data" "${rpm_flag[@]}" -j 16 \
        > "$dir/claudedl.log" 2>&1 &
      ;;
    *) echo "unknown client $client" >&2; exit 2 ;;
  esac
  client_pid=$!
}

mock_call() { # method, path → the mock's JSON answer (curl when present: it starts faster)
  if command -v curl >/dev/null; then
    curl -sf --max-time 10 -X "$1" "$url$2"
  else
    python3 -c 'import sys, urllib.request as u
r = u.Request(sys.argv[1], method=sys.argv[2])
print(u.urlopen(r, timeout=10).read().decode())' "$url$2" "$1"
  fi
}

results="$work/results.jsonl"
: > "$results"
for scenario in $SCENARIOS; do
  for client in $CLIENTS; do
    dir="$work/$scenario-$client"
    mkdir -p "$dir"
    # shellcheck disable=SC2046
    start_mock $(mock_args "$scenario")
    mock_call POST /_mock/reset-stats > /dev/null
    run_client "$client" "$dir"
    # `wait` (unlike a foreground job) lets Ctrl-C through at once; the trap kills the client.
    code=0
    wait "$client_pid" || code=$?
    client_pid=
    mock_call GET /_mock/stats > "$dir/stats.json"
    python3 bench/ratelimit_stats.py record "$results" "$dir/stats.json" "$scenario" "$label" \
      "$code" "$(goal_429 "$scenario")"
    stop_mock
    echo "done: $scenario / $label (exit $code)" >&2
  done
done

table=$(python3 bench/ratelimit_stats.py report "$results")
echo "$table"
[ "$DOC" = - ] && exit 0

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
cat > "$DOC" <<DOC
# Benchmark: rate-limit governance (issue #4)

Generated by \`bench/ratelimit.sh\` on $(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT (at the start of the run).

**Goal** (claudedl): utilisation ≥ 97 % and ≤ 1 429 per 1,000 requests; ≤ 5 per 1,000 when the
server lowers its limit mid-run.

## Setup
- Mock: \`claudedl-mock --files 1000 --content-bytes 2048 --rpm 600 [...]\`, a fresh one per run:
  - **default**: \`--rpm 600\`, bucket capacity 600 (a whole minute's worth at once);
  - **strict**: \`--rpm 600 --rpm-burst 10\` (about one second's worth: the limit enforced per second);
  - **lowered**: strict, plus \`--rpm-change-after $HALF:300\` (the limit halves $HALF s into the run).
- Clients, each for at most $DURATION s (or until all 1,000 files are done):
  - **naive**: \`bench/naive_client.py\`, the original design's RetryDownloader shape: 8 threads, on
    a 429 sleep \`retry-after\` and halve the threads; never reads the rate-limit headers;
  - **claudedl**: \`ANTHROPIC_API_KEY=… timeout -s INT $DURATION claudedl sync --base-url URL
    --data-dir DIR --rpm 600 -j 16\` (exit 130: stopped while still running).
- Measured by the mock (\`GET /_mock/stats\`) over the window from just before the client starts
  to just after it ends. *accepted* = requests not answered 429; *achieved* = accepted per
  minute; *utilisation of rate* = accepted / (the limit's rate × the window, time-weighted across
  the change): the issue's "achieved / allowed", on which the goal is judged; *allowed incl.
  bucket* adds the tokens in the bucket at the start (600 default, 10 strict), and *utilisation
  of bucket* = accepted / that. With the default bucket a client may take 600 requests at once;
  claudedl deliberately does not (acceleration limits: it paces at the limit's rate with a
  half-second burst), so it leaves that initial credit unspent.

## Machine
- CPU: ${cpu:-unknown}, $(nproc) cores (shared with other work; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))
- Kernel $(uname -r); $(rustc --version 2>/dev/null || echo "rustc unknown"); Python $(python3 -c 'import platform; print(platform.python_version())')

## Command
\`\`\`
$COMMAND
\`\`\`

## Results
$table
DOC
echo "wrote $DOC" >&2
