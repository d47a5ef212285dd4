#!/usr/bin/env bash
# Small files (issue 12): claudedl against curl at its best, wget and aria2c. See
# docs/benchmarks-small.md.
#   get:  N × 4 KiB from loopback nginx: claudedl get -i, curl (xargs -P16, ~625 URLs per
#         process on one keep-alive connection, --remote-name-all), wget -i, aria2c -i -j16
#   sync: M × 4 KiB from the mock API (no budget): claudedl sync vs 16 curl processes, each
#         with a config file listing 1/16 of the content URLs with the API headers
#   "…-then-syncfs": curl as above, then one syncfs of its file system (`sync -f`) within the
#         timed run: curl's files made durable once at the end, as claudedl's are while it runs
#         (still less than claudedl gives: a crash before that syncfs leaves curl's names on
#         partial or empty files)
#   big:  1,000,000 × 1 KiB sync (BIG=1): wall, peak RSS, files/s; claudedl and curl, each at
#         the count and at a tenth of it: whether the time per file grows
#   floor (FLOOR=1, the default): bench/floor beside get -i, the same per-file work as claudedl
#         (ranged GET, SHA-256, unnamed file linked by one thread, syncfs) and no bookkeeping;
#         "floor-no-sync", the same without the syncfs, as the other tools run (the two differ
#         by what durability costs on this machine); "floor-sharded", the same on one
#         current-thread runtime per core instead of one multi-thread runtime; and the network
#         alone (bench/floor's claudedl-wire: the same requests, bodies dropped), with one
#         request at a time on 16 connections and pipelined 16 deep on 2
# Every table gives each tool's CPU, the share of the machine's cores left idle during its runs
# (whoever's they are: a tool that keeps every core busy has none to gain from more
# parallelism) and the machine's busy time per file (the tool's, the server's, the kernel's).
# Each run writes into a new directory; tools alternate within a round; medians of ROUNDS.
# Before each run the page cache is written back (untimed): claudedl makes its files durable
# with syncfs, which would otherwise also write back what the tool before it left behind.
# BENCH_TMP: where the runs write (default /tmp). A file system where millions of files were
# created and deleted slows every tool (ext4 skips recently freed inodes): for figures to
# compare, use a fresh one (docs/benchmarks-small.md, session 6). FRESH_FS=16G (as root) makes
# one for the run: an ext4 of that size in a sparse image (FRESH_FS_IMAGE, default
# /var/tmp/claudedl-bench-small.img), one inode per 4 KiB, removed at the end. Its loop device
# does direct I/O on the image: a buffered one keeps every block twice in the page cache (the
# file system's and the image file's) and copies each one over as it is written; in this VM,
# where memory first touched costs a fault in the host, that made a run of 1,000,000 files
# slower per file than one of 100,000, for every tool (docs/benchmarks-small.md, session 9).
#   ROUNDS=3 GET_FILES=10000 SYNC_FILES="5000 100000" BIG=0 JOBS=16 bash bench/small.sh
# BIG=1 writes ~10 GB more (two runs of 1,000,000 files, two of 100,000): after the other
# sections, FRESH_FS=40G (the image is sparse: only what is written takes room).
# Needs a release build (cargo build --release --workspace), nginx, curl, wget, aria2c,
# /usr/bin/time. Loopback only.
set -euo pipefail
trap 'echo "bench/small.sh: failed at line $LINENO" >&2' ERR
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
GET_FILES=${GET_FILES:-10000}
SYNC_FILES=${SYNC_FILES:-"5000 100000"}
BIG=${BIG:-0}
JOBS=${JOBS:-16}
FLOOR=${FLOOR:-1}
BIN=${CLAUDEDL:-target/release/claudedl}
MOCK=${CLAUDEDL_MOCK:-target/release/claudedl-mock}
for tool in "$BIN" "$MOCK" /usr/bin/time nginx curl wget aria2c python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool"; exit 2; }
done
floor=target/floor/release/claudedl-floor
wire=target/floor/release/claudedl-wire
if [[ $FLOOR == 1 && $GET_FILES != 0 ]]; then
  cargo build -q --release --manifest-path bench/floor/Cargo.toml --target-dir target/floor
fi
pids=() fresh_mount= fresh_loop=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n $fresh_mount ]]; then # the whole file system goes: no need to delete its files
    umount "$fresh_mount" && losetup -d "$fresh_loop" && rmdir "$fresh_mount" && rm -f "$FRESH_FS_IMAGE"
  else
    [[ -n ${work:-} ]] && rm -rf "$work"
    [[ -n $fresh_loop ]] && losetup -d "$fresh_loop" # attached, never mounted
    [[ -n ${FRESH_FS_IMAGE:-} ]] && rm -f "$FRESH_FS_IMAGE" # made, never mounted
  fi
  return 0
}
trap cleanup EXIT
if [[ -n ${FRESH_FS:-} ]]; then
  [[ $(id -u) == 0 ]] || { echo "FRESH_FS needs root (mount)"; exit 2; }
  FRESH_FS_IMAGE=${FRESH_FS_IMAGE:-/var/tmp/claudedl-bench-small.img}
  rm -f "$FRESH_FS_IMAGE"
  truncate -s "$FRESH_FS" "$FRESH_FS_IMAGE"
  mkfs.ext4 -q -F -i 4096 "$FRESH_FS_IMAGE"
  mount_point=$(mktemp -d /tmp/claudedl-bench-fs.XXXXXX)
  fresh_loop=$(losetup --direct-io=on --find --show "$FRESH_FS_IMAGE")
  if [[ $(cat "/sys/block/${fresh_loop#/dev/}/loop/dio") != 1 ]]; then
    echo "bench/small.sh: $fresh_loop does buffered I/O ($FRESH_FS_IMAGE's file system has no direct I/O)" >&2
    exit 2
  fi
  mount "$fresh_loop" "$mount_point"
  fresh_mount=$mount_point
  BENCH_TMP=$mount_point
fi
work=$(mktemp -d "${BENCH_TMP:-/tmp}/claudedl-bench-small.XXXXXX")
run_no=0
fresh() { run_no=$((run_no + 1)); d="$work/run$run_no"; mkdir -p "$d"; } # sets $d
# timed RESULTS LABEL cmd… : appends "label wall rss_kib cpu_s idle_s" (the command runs in a new
# dir; cpu: user + system of it and its children; idle: core-seconds no thread of the machine
# used meanwhile, idle and iowait of /proc/stat, whoever's: what a tool leaves of the cores)
timed() {
  local results=$1 label=$2; shift 2
  sync # untimed: no run pays for writing back what an earlier one left in the page cache
  [[ -z ${served:-} ]] || find "$served" -type f -exec cat {} + > /dev/null # served from memory
  local idle_before; idle_before=$(idle_ticks)
  timeout 1800 /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$@" > "$work/last.out" 2> "$work/last.err" \
    || { echo "$label failed: $(tail -3 "$work/last.err")" >&2; return 0; }
  local idle=$(( $(idle_ticks) - idle_before ))
  read -r wall rss user system < "$work/time"
  echo "$label $wall $rss $(python3 -c "print(round($user + $system, 2), $idle / $(getconf CLK_TCK))")" >> "$results"
  evict "$d"
}
idle_ticks() { awk '/^cpu / { print $5 + $6; exit }' /proc/stat; }
# Memory. Each run's files leave the page cache once written back (untimed): memory in use stays
# level from run to run (FRESH_FS's image has no pages cached: its loop device does direct I/O). In this VM a page
# the guest has not used lately costs a fault in the host on first touch; a benchmark whose page
# cache only grows soon allocates nothing but such pages, and from then on every run that
# writes back its files within its time (claudedl; the others' are written back after they
# exit) pays for them: a sync of 100,000 takes 15-16 s instead of 8-9 (docs/benchmarks-small.md,
# session 8). As root, the caches are also emptied once before the first run, and the tools
# read back in.
evict() { # DIR: drop the cached pages of its files
  sync
  python3 - "$1" <<'PY'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        try:
            fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
PY
}
if [[ $(id -u) == 0 ]]; then
  sync && echo 3 > /proc/sys/vm/drop_caches
  for tool in "$BIN" "$MOCK" "$floor" "$(command -v curl)" "$(command -v wget)" "$(command -v aria2c)"; do
    [[ -f $tool ]] && cat "$tool" $(ldd "$tool" 2>/dev/null | grep -o '/[^ ]*') > /dev/null
  done
fi
table() { # RESULTS FILES
  python3 - "$1" "$2" <<'PY'
import os, sys, statistics, collections
runs = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, wall, rss, cpu, idle = line.split()
    runs.setdefault(label, []).append((float(wall), int(rss), float(cpu), float(idle)))
files, cores = int(sys.argv[2]), os.cpu_count()
print("| tool | runs | median wall s | files/s | peak RSS MiB | median CPU s | CPU µs/file "
      "| cores left idle | machine µs/file |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for label, rs in runs.items():
    wall = statistics.median(r[0] for r in rs)
    rss = max(r[1] for r in rs) / 1024
    cpu = statistics.median(r[2] for r in rs)
    idle = statistics.median(r[3] / (cores * r[0]) for r in rs)
    # Every core's time the run took but the idle: the tool's, the server's, the kernel's.
    busy = statistics.median(cores * r[0] - r[3] for r in rs)
    print(f"| {label} | {len(rs)} | {wall:.2f} | {files / wall:.0f} | {rss:.0f} | {cpu:.2f} "
          f"| {cpu / files * 1e6:.0f} | {idle:.0%} | {busy / files * 1e6:.0f} |")
print()
print("Each run's wall, s, in order: " + "; ".join(
    f"{label} " + " ".join(f"{r[0]:.2f}" for r in rs) for label, rs in runs.items()))
PY
}

# ---- get -i from nginx (GET_FILES=0 skips it) ----------------------------------------------------
if [[ $GET_FILES != 0 ]]; then
mkdir -p "$work/www" "$work/ng"
python3 - "$work/www" "$GET_FILES" <<'PY'
import os, sys
for i in range(int(sys.argv[2])):
    with open(os.path.join(sys.argv[1], f"f{i:07}.bin"), "wb") as f:
        f.write(os.urandom(4096))
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/ng/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; error_log $work/ng/error.log; pid $work/ng/pid;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work/ng; proxy_temp_path $work/ng; fastcgi_temp_path $work/ng;
  uwsgi_temp_path $work/ng; scgi_temp_path $work/ng; keepalive_requests 100000; keepalive_timeout 120s;
  server { listen 127.0.0.1:$port; root $work/www; } }
CONF
nginx -p "$work/ng/" -c "$work/ng/nginx.conf" -e "$work/ng/error.log" &
pids+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/f0000000.bin" && break; sleep 0.1; done
ls "$work/www" | sed "s|^|http://127.0.0.1:$port/|" > "$work/urls.txt"
# This VM pages out page cache unused for a few seconds (DAMON, `pageout` of cold unmapped
# pages): without reading the served files back before each run, nginx waits for the disk in
# some runs and not in others (session 9).
served=$work/www
per=$(( (GET_FILES + 15) / 16 ))
get_results=$work/get.tsv
for round in $(seq "$ROUNDS"); do
  fresh; mine=$d; timed "$get_results" "claudedl-get-i-j$JOBS" "$BIN" get -q -i "$work/urls.txt" -d "$d" -j "$JOBS"
  fresh; timed "$get_results" "curl-xargs-P16" sh -c "cd '$d' && xargs -P16 -n $per curl -s --remote-name-all < '$work/urls.txt'"
  fresh; timed "$get_results" "curl-xargs-P16-then-syncfs" sh -c "cd '$d' && xargs -P16 -n $per curl -s --remote-name-all < '$work/urls.txt' && sync -f ."
  fresh; timed "$get_results" "wget-i" wget -q -i "$work/urls.txt" -P "$d"
  fresh; timed "$get_results" "aria2c-i-j16" aria2c -q -i "$work/urls.txt" -d "$d" -j16 --allow-overwrite=true --auto-file-renaming=false
  if [[ $FLOOR == 1 ]]; then
    fresh; timed "$get_results" "floor" "$floor" "$work/urls.txt" "$d"
    fresh; timed "$get_results" "floor-no-sync" "$floor" "$work/urls.txt" "$d" --no-sync
    fresh; timed "$get_results" "floor-sharded" "$floor" "$work/urls.txt" "$d" --sharded
    sync
    "$wire" "$work/urls.txt" >> "$work/wire.txt"
    "$wire" "$work/urls.txt" --pipeline 16 >> "$work/wire.txt"
  fi
  if [[ -n "${BASE:-}" ]]; then
    fresh; timed "$get_results" "base-get-i-j$JOBS" "$BASE" get -q -i "$work/urls.txt" -d "$d" -j "$JOBS"
  fi
  got=$(find "$mine" -type f -name 'f*.bin' | wc -l)
  [[ $got == "$GET_FILES" ]] || echo "claudedl round $round: $got files of $GET_FILES" >&2
done
echo "## get -i: $GET_FILES × 4 KiB from loopback nginx (medians of $ROUNDS)"
echo
table "$get_results" "$GET_FILES"
echo
if [[ $FLOOR == 1 ]]; then
  echo "The network alone (claudedl-wire: the same requests, bodies dropped; the machine's busy"
  echo "CPU, nginx's and the kernel's included), medians of $ROUNDS:"
  echo
  python3 - "$work/wire.txt" <<'PY'
import re, statistics, sys, collections
runs = collections.OrderedDict()
for line in open(sys.argv[1]):
    m = re.search(r"(\d+) connections, (\d+) a connection at once: wall (\d+) ms, .*\(([\d.]+) µs a file\)", line)
    label = f"{m[1]} connections, {m[2]} request(s) at once on each"
    runs.setdefault(label, []).append((int(m[3]), float(m[4])))
for label, rs in runs.items():
    wall = statistics.median(r[0] for r in rs)
    busy = statistics.median(r[1] for r in rs)
    print(f"- {label}: wall {wall:.0f} ms, machine busy {busy:.0f} µs a file")
PY
  echo
fi
kill "${pids[-1]}" 2>/dev/null || true
served=
fi

# ---- sync from the mock -----------------------------------------------------------------------
export CLAUDEDL_RPM=1000000
start_mock() { # args → ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY
  "$MOCK" "$@" > "$work/mock.out" &
  pids+=($!)
  for _ in $(seq 200); do grep -q base_url "$work/mock.out" 2>/dev/null && break; sleep 0.05; done
  export ANTHROPIC_BASE_URL=$(sed -n 's/.*base_url=\([^ ]*\).*/\1/p' "$work/mock.out")
  export ANTHROPIC_API_KEY=$(sed -n 's/.*api_key=\([^ ]*\).*/\1/p' "$work/mock.out")
}
curl_configs() { # N DIR → 16 curl config files listing the content URLs with the API headers
  python3 - "$1" "$2" "$ANTHROPIC_BASE_URL" "$ANTHROPIC_API_KEY" <<'PY'
import json, os, sys, urllib.request
n, out, base, key = int(sys.argv[1]), sys.argv[2], sys.argv[3].rstrip("/"), sys.argv[4]
headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "anthropic-beta": "files-api-2025-04-14"}
ids, after = [], None
while True:
    url = f"{base}/v1/files?limit=1000" + (f"&after_id={after}" if after else "")
    page = json.load(urllib.request.urlopen(urllib.request.Request(url, headers=headers)))
    ids += [f["id"] for f in page["data"]]
    if not page.get("has_more"):
        break
    after = page["last_id"]
for k in range(16):
    with open(os.path.join(out, f"curl{k}.cfg"), "w") as cfg:
        for name, value in headers.items():
            cfg.write(f'header = "{name}: {value}"\n')
        for i, fid in enumerate(ids[k::16]):
            cfg.write(f'url = "{base}/v1/files/{fid}/content"\noutput = "{fid}"\n')
PY
}
for n in $SYNC_FILES; do
  start_mock --files "$n" --content-bytes 4096
  cfgs=$work/cfg$n; mkdir -p "$cfgs"; curl_configs "$n" "$cfgs"
  results=$work/sync$n.tsv
  for round in $(seq "$ROUNDS"); do
    fresh; timed "$results" "claudedl-sync-j$JOBS" "$BIN" sync --data-dir "$d" --files-only -j "$JOBS" --json
    fresh; timed "$results" "curl-16-configs" sh -c "cd '$d' && for k in \$(seq 0 15); do curl -s -K '$cfgs/curl'\$k.cfg & done; wait"
    fresh; timed "$results" "curl-16-configs-then-syncfs" sh -c "cd '$d' && for k in \$(seq 0 15); do curl -s -K '$cfgs/curl'\$k.cfg & done; wait; sync -f ."
    if [[ -n "${BASE:-}" && $n -le 5000 ]]; then # the old binary takes minutes beyond
      fresh; timed "$results" "base-sync-j$JOBS" "$BASE" sync --data-dir "$d" --files-only -j "$JOBS" --json
    fi
  done
  echo "## sync: $n × 4 KiB from the mock API, no budget (medians of $ROUNDS)"
  echo
  table "$results" "$n"
  echo
  kill "${pids[-1]}" 2>/dev/null || true
done

# ---- 1,000,000 × 1 KiB --------------------------------------------------------------------------
# Linear growth: claudedl and curl (as for sync above) at BIG_FILES and at a tenth of it; the
# last table says how much longer a file took in the big run than in the small one, per tool.
if [[ $BIG != 0 ]]; then
  big=${BIG_FILES:-1000000}
  big_results=$work/big.tsv
  for n in $((big / 10)) "$big"; do
    need_kib=$((n * 11)) # two runs of one 4 KiB block and one inode a file, index and metadata
    room_kib=$(df --output=avail -k "$work" | tail -1)
    if ((room_kib < need_kib)); then
      echo "bench/small.sh: $n files need ~$((need_kib / 1048576)) GiB, $work has $((room_kib / 1048576)) GiB (FRESH_FS=40G)" >&2
      exit 2
    fi
    start_mock --files "$n" --content-bytes 1024
    cfgs=$work/cfg-big$n; mkdir -p "$cfgs"; curl_configs "$n" "$cfgs"
    results=$work/big$n.tsv
    fresh; timed "$results" "claudedl-sync-j$JOBS" "$BIN" sync --data-dir "$d" --files-only -j "$JOBS" --json
    fresh; timed "$results" "curl-16-configs" sh -c "cd '$d' && for k in \$(seq 0 15); do curl -s -K '$cfgs/curl'\$k.cfg & done; wait"
    rm -rf "$cfgs"
    sed "s/^/$n /" "$results" >> "$big_results"
    echo "## sync: $n × 1 KiB from the mock API (one run each)"
    echo
    table "$results" "$n"
    echo
    kill "${pids[-1]}" 2>/dev/null || true
  done
  echo "## Growth: time per file at $big files over time per file at $((big / 10))"
  echo
  python3 - "$big_results" <<'PY'
import sys, collections
per_file = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    n, label, wall = line.split()[:3]
    per_file[label][int(n)] = float(wall) / int(n)
print("| tool | per file, small run | per file, big run | growth (1.00 = linear) |")
print("| --- | --- | --- | --- |")
for label, runs in per_file.items():
    if len(runs) == 2:
        (_, small), (_, large) = sorted(runs.items())
        print(f"| {label} | {small * 1e6:.0f} µs | {large * 1e6:.0f} µs | {large / small:.2f} |")
PY
fi
