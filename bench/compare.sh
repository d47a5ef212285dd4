#!/usr/bin/env bash
# Compare claudedl with curl and aria2c on loopback nginx. See docs/benchmarks.md.
#
#   bash bench/compare.sh                  # builds target/release/claudedl, ROUNDS=3
#   ROUNDS=5 bash bench/compare.sh
#   CLAUDEDL=/path/to/claudedl bash bench/compare.sh   # benchmark a given binary, no build
#   SCENARIOS=5 CLAUDEDL_BASE=/path/to/older/claudedl bash bench/compare.sh   # before/after
#
# Environment:
#   ROUNDS=3          interleaved rounds per scenario (medians are reported)
#   CLAUDEDL=         binary to test (default: `cargo build --release`, target/release/claudedl)
#   BENCH_TMP=/tmp    where the work directory (files served, downloads) is created
#   KILL_MIB=256      file size for the kill -9 / resume scenario
#   SCENARIOS="1 2 4" which scenarios to run (3 runs along with 2; 5 = the cost of --encrypt-to)
#   CLAUDEDL_BASE=    also run this binary (an older build), interleaved with the rest, in every
#                     scenario: before/after figures from one run
#   REPORT=           also write the markdown report to this file
#   KEEP=1            keep the work directory (nginx logs, outputs) for inspection
#   RUN_TIMEOUT=300   seconds before a client run is killed (counted as a failure)
#   STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
#   KILL_JITTER=0.3   scenario 4: random extra delay (s) before the kill, see bench/lib.py
#
# Everything listens on 127.0.0.1 only. nginx runs as the current user, single process, with
# every path in the work directory; it and any client still running are stopped on exit.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
KILL_MIB=${KILL_MIB:-256}
SCENARIOS=${SCENARIOS:-"1 2 4"}
BENCH_TMP=${BENCH_TMP:-/tmp}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
STREAM_MODULE=${STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}

CAP_MIB_S=2          # nginx `proxy_download_rate 2m` = 2 MiB/s per connection
CAPPED_MIB=64        # scenario 1 file
CAPPED_CONNS=10
CURL_CAPPED_MIB=16   # the single curl reference fetches this prefix (a full 64 MiB takes 32 s)
BIG_MIB=1024         # scenarios 2 and 3
KILL_CONNS=10
MIB=$((1024 * 1024))

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
LIB="$HERE/lib.py"

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- tools ---------------------------------------------------------------------------------

missing=()
need() { # command debian-package
    command -v "$1" >/dev/null 2>&1 || missing+=("$1 (apt-get install $2)")
}
need nginx nginx
need aria2c aria2
need curl curl
need python3 python3
need cmp diffutils
need timeout coreutils
[[ -x /usr/bin/time ]] || missing+=("/usr/bin/time (apt-get install time)")
[[ -f $STREAM_MODULE ]] || missing+=("$STREAM_MODULE (apt-get install libnginx-mod-stream)")
if [[ " $SCENARIOS " == *" 5 "* ]]; then
    need age age
    need age-keygen age
    need sha256sum coreutils
fi
if ((${#missing[@]})); then
    log "missing tools:"
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"

free_kib=$(df -Pk "$BENCH_TMP" | awk 'NR == 2 { print $4 }')
((free_kib > 5 * 1024 * 1024)) || die "$BENCH_TMP needs 5 GiB free (files served + downloads)"

# ---- work directory, cleanup ---------------------------------------------------------------

W=$(mktemp -d "$BENCH_TMP/claudedl-bench.XXXXXX")
NGINX_PID=
CLIENT_PID=
cleanup() {
    local rc=$?
    if [[ -n $CLIENT_PID ]] && kill -0 "$CLIENT_PID" 2>/dev/null; then
        kill -9 "$CLIENT_PID" 2>/dev/null || true
    fi
    if [[ -n $NGINX_PID ]] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP:-} == 1 ]]; then
        log "work directory kept: $W"
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WWW=$W/www OUT=$W/out NG=$W/nginx
mkdir -p "$WWW" "$OUT" "$NG/tmp" "$W/bin"

# ---- the binary under test -----------------------------------------------------------------

if [[ -z ${CLAUDEDL:-} ]]; then
    log "building claudedl (cargo build --release) in $REPO"
    (cd "$REPO" && cargo build --release >&2) ||
        die "cargo build --release failed; set CLAUDEDL=/path/to/claudedl to test a built binary"
    CLAUDEDL=$REPO/target/release/claudedl
    BUILT_FROM="built from $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
    if [[ -n $(git --no-optional-locks -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        BUILT_FROM+=" + uncommitted changes in src/"
    fi
else
    BUILT_FROM="CLAUDEDL=$CLAUDEDL"
fi
[[ -x $CLAUDEDL ]] || die "CLAUDEDL=$CLAUDEDL is not an executable"
# A private copy: a rebuild in the repository during the run cannot swap the binary.
cp "$CLAUDEDL" "$W/bin/claudedl"
BIN=$W/bin/claudedl
BASE_BIN=
if [[ -n ${CLAUDEDL_BASE:-} ]]; then
    [[ -x $CLAUDEDL_BASE ]] || die "CLAUDEDL_BASE=$CLAUDEDL_BASE is not an executable"
    cp "$CLAUDEDL_BASE" "$W/bin/claudedl-base"
    BASE_BIN=$W/bin/claudedl-base
    BUILT_FROM+="; baseline CLAUDEDL_BASE=$CLAUDEDL_BASE"
fi

# ---- files to serve ------------------------------------------------------------------------

log "generating test files in $WWW"
head -c $((BIG_MIB * MIB)) /dev/urandom >"$WWW/f1g.bin"
head -c $((CAPPED_MIB * MIB)) "$WWW/f1g.bin" >"$WWW/f64.bin"
head -c $((KILL_MIB * MIB)) "$WWW/f1g.bin" >"$WWW/fkill.bin"
declare -A SHA
for f in f1g f64 fkill; do
    SHA[$f]=$(python3 "$LIB" sha256 "$WWW/$f.bin")
done

# ---- nginx: HTTP server + per-connection capped stream proxy -------------------------------

read -r HTTP_PORT ORIGIN_PORT PROXY_PORT < <(python3 "$LIB" ports 3)
HTTP_LOG=$NG/http.log
STREAM_LOG=$NG/stream.log
cat >"$NG/nginx.conf" <<EOF
load_module $STREAM_MODULE;
daemon off;
master_process off;
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 1024; }
http {
    log_format bench '\$msec \$status \$body_bytes_sent \$connection \$connection_requests "\$http_range"';
    access_log $HTTP_LOG bench;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 120s;
    # Direct (scenarios 2, 3): default socket buffers.
    server {
        listen 127.0.0.1:$HTTP_PORT;
        root $WWW;
    }
    # The origin behind the capped proxy (scenarios 1, 4). A small send buffer keeps what
    # \$body_bytes_sent counts close to what the proxy has passed on: with the default
    # (autotuned up to net.ipv4.tcp_wmem's max) nginx logs megabytes per connection that are
    # still sitting in the socket when the client hangs up.
    server {
        listen 127.0.0.1:$ORIGIN_PORT sndbuf=64k;
        root $WWW;
    }
}
stream {
    log_format bench '\$msec \$status \$bytes_sent \$bytes_received \$upstream_bytes_received \$session_time';
    access_log $STREAM_LOG bench;
    server {
        listen 127.0.0.1:$PROXY_PORT;
        proxy_pass 127.0.0.1:$ORIGIN_PORT;
        proxy_download_rate ${CAP_MIB_S}m;
    }
}
EOF
nginx -t -q -p "$NG/" -c "$NG/nginx.conf" -e "$NG/error.log" || die "nginx rejected $NG/nginx.conf"
nginx -p "$NG/" -c "$NG/nginx.conf" -e "$NG/error.log" &
NGINX_PID=$!
python3 "$LIB" wait-port "$HTTP_PORT" 10
python3 "$LIB" wait-port "$ORIGIN_PORT" 10
python3 "$LIB" wait-port "$PROXY_PORT" 10
touch "$HTTP_LOG" "$STREAM_LOG"
DIRECT=http://127.0.0.1:$HTTP_PORT
CAPPED=http://127.0.0.1:$PROXY_PORT
curl -sSf -r 0-0 -o /dev/null "$DIRECT/f64.bin" || die "nginx does not serve $DIRECT/f64.bin"
curl -sSf -r 0-0 -o /dev/null "$CAPPED/f64.bin" || die "the proxy does not serve $CAPPED/f64.bin"
log "nginx: direct $DIRECT, capped proxy $CAPPED (pid $NGINX_PID)"

# Scenario 5: a recipient, and a resume identity of the run's own.
AGE_KEY=$W/age-key.txt
if [[ " $SCENARIOS " == *" 5 "* ]]; then
    age-keygen -o "$AGE_KEY" 2>/dev/null
    AGE_RECIPIENT=$(age-keygen -y "$AGE_KEY")
    export CLAUDEDL_RESUME_IDENTITY=$W/resume-identity.txt
fi

# ---- running one client --------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS=$W/results.tsv
KILLS=$W/kills.tsv
printf 'scenario\ttool\tround\texit\twall\tuser\tsys\trss_kb\tsize\tok\tserved_http\treqs_http\tsent_proxy\tconns_proxy\n' >"$RESULTS"

ARIA2=(aria2c -q --allow-overwrite=true --auto-file-renaming=false --file-allocation=falloc
    --summary-interval=0 --console-log-level=error)

fresh() { # remove an output and everything a client keeps beside it
    rm -f "$1" "$1.part" "$1.part.json" "$1.aria2"
}

logsize() { stat -c %s "$1"; }

# run_one SCENARIO TOOL ROUND OUTPUT SOURCE_FILE EXPECTED_SHA|- -- command...
# Times the command with /usr/bin/time, checks the output against the source, adds the bytes
# nginx logged for it, appends a row to $RESULTS. The source is read back first: this VM pages
# out page cache left cold for a few seconds (DAMON), and nginx would read it from the disk in
# some runs and not in others (docs/benchmarks-small.md, session 9).
run_one() {
    local scenario=$1 tool=$2 round=$3 out=$4 src=$5 sha=$6
    shift 7
    fresh "$out"
    sync
    cat "$src" >/dev/null # untimed: nginx serves from memory in every run
    local h0 p0 rc=0
    h0=$(logsize "$HTTP_LOG")
    p0=$(logsize "$STREAM_LOG")
    /usr/bin/time -f '%e %U %S %M' -o "$W/time.txt" \
        timeout --signal=KILL "$RUN_TIMEOUT" "$@" >"$W/stdout.txt" 2>"$W/stderr.txt" || rc=$?
    sleep 1 # nginx logs a request / stream session when its connection closes
    local wall user sys rss
    read -r wall user sys rss < <(tail -n 1 "$W/time.txt")
    local size=0 ok=no
    if [[ -f $out ]]; then
        size=$(stat -c %s "$out")
        if [[ $out == *.age ]]; then # decrypted (untimed) by the age CLI, compared by hash
            if [[ $(age -d -i "$AGE_KEY" "$out" | sha256sum | cut -d' ' -f1) == "$sha" ]]; then
                ok=yes
            fi
        elif cmp -s -n "$size" "$out" "$src"; then ok=yes; fi
        if [[ $sha != - ]]; then
            local got
            got=$(python3 "$LIB" json-field "$W/stdout.txt" sha256)
            [[ $got == "$sha" ]] || ok=no
        fi
    fi
    local served reqs sent conns
    read -r served reqs < <(python3 "$LIB" logsum "$HTTP_LOG" "$h0" 2)
    read -r sent conns < <(python3 "$LIB" logsum "$STREAM_LOG" "$p0" 2)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" \
        "$round" "$rc" "$wall" "$user" "$sys" "$rss" "$size" "$ok" "$served" "$reqs" "$sent" \
        "$conns" >>"$RESULTS"
    log "  $tool: exit $rc, ${wall}s wall, ${user}s user, ${sys}s sys, ${rss} KiB RSS, $size bytes, match=$ok, served $served B in $reqs requests"
    if [[ $rc != 0 || $ok != yes ]]; then
        log "  stderr of $tool:"
        sed 's/^/    /' "$W/stderr.txt" | tail -n 20 >&2
        cp "$W/stderr.txt" "$W/failed-$scenario-$round-${tool// /_}.stderr"
    fi
    fresh "$out"
}

# run_tool NAME ROUND: one run of the named tool of the current scenario
run_tool() {
    local name=$1 round=$2
    case $name in
    # scenario 1: capped
    "claudedl -c 10")
        run_one capped "$name" "$round" "$OUT/f64.bin" "$WWW/f64.bin" "${SHA[f64]}" -- \
            "$BIN" get "$CAPPED/f64.bin" -o "$OUT/f64.bin" -c "$CAPPED_CONNS" --json -q ;;
    "aria2c -x10 -s10 -k1M")
        run_one capped "$name" "$round" "$OUT/f64.bin" "$WWW/f64.bin" - -- \
            "${ARIA2[@]}" -x10 -s10 -k1M -d "$OUT" -o f64.bin "$CAPPED/f64.bin" ;;
    "curl (1 connection, first $CURL_CAPPED_MIB MiB)")
        run_one capped "$name" "$round" "$OUT/f64.bin" "$WWW/f64.bin" - -- \
            curl -sSf -r "0-$((CURL_CAPPED_MIB * MIB - 1))" -o "$OUT/f64.bin" "$CAPPED/f64.bin" ;;
    # scenarios 2 and 3: uncapped 1 GiB
    "claudedl -c 8")
        run_one uncapped "$name" "$round" "$OUT/f1g.bin" "$WWW/f1g.bin" "${SHA[f1g]}" -- \
            "$BIN" get "$DIRECT/f1g.bin" -o "$OUT/f1g.bin" -c 8 --json -q ;;
    "claudedl -c 16")
        run_one uncapped "$name" "$round" "$OUT/f1g.bin" "$WWW/f1g.bin" "${SHA[f1g]}" -- \
            "$BIN" get "$DIRECT/f1g.bin" -o "$OUT/f1g.bin" -c 16 --json -q ;;
    "claudedl -c 8 --checkpoint-ms 100000")
        # Diagnostic (hidden flag): no periodic checkpoint, i.e. no fdatasync every 100 ms.
        run_one uncapped "$name" "$round" "$OUT/f1g.bin" "$WWW/f1g.bin" "${SHA[f1g]}" -- \
            "$BIN" get "$DIRECT/f1g.bin" -o "$OUT/f1g.bin" -c 8 --json -q --checkpoint-ms 100000 ;;
    "curl -o")
        run_one uncapped "$name" "$round" "$OUT/f1g.bin" "$WWW/f1g.bin" - -- \
            curl -sSf -o "$OUT/f1g.bin" "$DIRECT/f1g.bin" ;;
    "curl -o, then sync FILE")
        run_one uncapped "$name" "$round" "$OUT/f1g.bin" "$WWW/f1g.bin" - -- \
            sh -c 'curl -sSf -o "$1" "$2" && sync "$1"' sh "$OUT/f1g.bin" "$DIRECT/f1g.bin" ;;
    "aria2c -x8 -s8")
        run_one uncapped "$name" "$round" "$OUT/f1g.bin" "$WWW/f1g.bin" - -- \
            "${ARIA2[@]}" -x8 -s8 -d "$OUT" -o f1g.bin "$DIRECT/f1g.bin" ;;
    # scenario 5: the cost of encryption (1 GiB, uncapped)
    "claudedl -c 8, plain")
        run_one encrypt "$name" "$round" "$OUT/f1g.bin" "$WWW/f1g.bin" "${SHA[f1g]}" -- \
            "$BIN" get "$DIRECT/f1g.bin" -o "$OUT/f1g.bin" -c 8 --json -q ;;
    "claudedl -c 8 --encrypt-to")
        run_one encrypt "$name" "$round" "$OUT/f1g.bin.age" "$WWW/f1g.bin" "${SHA[f1g]}" -- \
            "$BIN" get "$DIRECT/f1g.bin" -o "$OUT/f1g.bin" -c 8 --json -q \
            --encrypt-to "$AGE_RECIPIENT" ;;
    "baseline -c 10")
        run_one capped "$name" "$round" "$OUT/f64.bin" "$WWW/f64.bin" "${SHA[f64]}" -- \
            "$BASE_BIN" get "$CAPPED/f64.bin" -o "$OUT/f64.bin" -c "$CAPPED_CONNS" --json -q ;;
    "baseline -c 8")
        run_one uncapped "$name" "$round" "$OUT/f1g.bin" "$WWW/f1g.bin" "${SHA[f1g]}" -- \
            "$BASE_BIN" get "$DIRECT/f1g.bin" -o "$OUT/f1g.bin" -c 8 --json -q ;;
    "baseline -c 8, plain")
        run_one encrypt "$name" "$round" "$OUT/f1g.bin" "$WWW/f1g.bin" "${SHA[f1g]}" -- \
            "$BASE_BIN" get "$DIRECT/f1g.bin" -o "$OUT/f1g.bin" -c 8 --json -q ;;
    "baseline -c 8 --encrypt-to")
        run_one encrypt "$name" "$round" "$OUT/f1g.bin.age" "$WWW/f1g.bin" "${SHA[f1g]}" -- \
            "$BASE_BIN" get "$DIRECT/f1g.bin" -o "$OUT/f1g.bin" -c 8 --json -q \
            --encrypt-to "$AGE_RECIPIENT" ;;
    *) die "unknown tool $name" ;;
    esac
}

# rounds SCENARIO_TITLE TOOL...: ROUNDS rounds, the order rotated each round
rounds() {
    local title=$1
    shift
    local tools=("$@") n=$# r i
    for ((r = 1; r <= ROUNDS; r++)); do
        log "$title: round $r/$ROUNDS"
        for ((i = 0; i < n; i++)); do
            run_tool "${tools[$(((i + r - 1) % n))]}" "$r"
        done
    done
}

has() { [[ " $SCENARIOS " == *" $1 "* ]]; }

CAPPED_TOOLS=("claudedl -c 10" "aria2c -x10 -s10 -k1M" "curl (1 connection, first $CURL_CAPPED_MIB MiB)")
BIG_TOOLS=("claudedl -c 8" "curl -o" "aria2c -x8 -s8" "claudedl -c 16" "curl -o, then sync FILE"
    "claudedl -c 8 --checkpoint-ms 100000")
ENCRYPT_TOOLS=("claudedl -c 8, plain" "claudedl -c 8 --encrypt-to")
if [[ -n $BASE_BIN ]]; then
    CAPPED_TOOLS+=("baseline -c 10")
    BIG_TOOLS+=("baseline -c 8")
    ENCRYPT_TOOLS+=("baseline -c 8, plain" "baseline -c 8 --encrypt-to")
fi

# ---- scenario 1: capped --------------------------------------------------------------------

if has 1; then
    rounds "1. capped $CAPPED_MIB MiB" "${CAPPED_TOOLS[@]}"
fi

# ---- scenarios 2 and 3: uncapped 1 GiB (3 = the RSS of claudedl -c 16) ---------------------

if has 2; then
    rounds "2/3. uncapped $BIG_MIB MiB" "${BIG_TOOLS[@]}"
fi

# ---- scenario 5: the cost of --encrypt-to (1 GiB, uncapped) -------------------------------

if has 5; then
    rounds "5. encryption, uncapped $BIG_MIB MiB" "${ENCRYPT_TOOLS[@]}"
fi

# ---- scenario 4: kill -9 at ~50 %, then resume ---------------------------------------------

printf 'tool\tround\tsize\tdone_at_kill\tkill_after\trun1_exit\trun2_exit\tresumed_from\trun2_bytes\tserved_http\treqs_http\tsent_proxy\tconns_proxy\tsha_ok\tsent_proxy_run1\n' >"$KILLS"
if has 4; then
    size=$((KILL_MIB * MIB))
    out=$OUT/fkill.bin
    kill_bins=("claudedl=$BIN")
    [[ -z $BASE_BIN ]] || kill_bins+=("baseline=$BASE_BIN")
    for ((r = 1; r <= ROUNDS; r++)); do
      for kill_bin in "${kill_bins[@]}"; do
        kill_tool=${kill_bin%%=*}
        cmd=("${kill_bin#*=}" get "$CAPPED/fkill.bin" -o "$out" -c "$KILL_CONNS" --json -q)
        log "4. kill -9 at 50 % of $KILL_MIB MiB, then resume ($kill_tool): round $r/$ROUNDS"
        fresh "$out"
        sync
        cat "$WWW/fkill.bin" >/dev/null # untimed, as in run_one
        h0=$(logsize "$HTTP_LOG")
        p0=$(logsize "$STREAM_LOG")
        rc1=0 rc2=0
        "${cmd[@]}" >"$W/run1.json" 2>"$W/run1.err" &
        CLIENT_PID=$!
        read -r killed_at kill_after < <(python3 "$LIB" kill-at "$out.part.json" "$CLIENT_PID" \
            $((size / 2)) "$RUN_TIMEOUT")
        { wait "$CLIENT_PID"; } 2>/dev/null || rc1=$? # (no "Killed" job notice)
        CLIENT_PID=
        sleep 1
        done_at_kill=$(python3 "$LIB" done-bytes "$out.part.json")
        read -r sent1 _ < <(python3 "$LIB" logsum "$STREAM_LOG" "$p0" 2)
        log "  killed (exit $rc1) after ${kill_after}s with $done_at_kill bytes done (watcher saw $killed_at); the proxy had sent $sent1 B"
        timeout --signal=KILL "$RUN_TIMEOUT" "${cmd[@]}" >"$W/run2.json" 2>"$W/run2.err" || rc2=$?
        sleep 1
        read -r served reqs < <(python3 "$LIB" logsum "$HTTP_LOG" "$h0" 2)
        read -r sent conns < <(python3 "$LIB" logsum "$STREAM_LOG" "$p0" 2)
        sha_ok=no
        if [[ -f $out ]] && [[ $(python3 "$LIB" sha256 "$out") == "${SHA[fkill]}" ]]; then
            sha_ok=yes
        fi
        resumed_from=$(python3 "$LIB" json-field "$W/run2.json" resumed_from)
        run2_bytes=$(python3 "$LIB" json-field "$W/run2.json" bytes)
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kill_tool" "$r" "$size" \
            "$done_at_kill" "$kill_after" "$rc1" "$rc2" "$resumed_from" "$run2_bytes" "$served" \
            "$reqs" "$sent" "$conns" "$sha_ok" "$sent1" >>"$KILLS"
        log "  resumed (exit $rc2): resumed_from=$resumed_from bytes=$run2_bytes; served $served B in $reqs requests, proxy sent $sent B in $conns connections; sha256 match=$sha_ok; refetched $((served - size)) B"
        if [[ $rc2 != 0 || $sha_ok != yes ]]; then
            sed 's/^/    /' "$W/run2.err" | tail -n 20 >&2
        fi
        fresh "$out"
      done
    done
fi

# ---- report --------------------------------------------------------------------------------

cat >"$W/params.json" <<EOF
{"cap_mib_s": $CAP_MIB_S, "capped_mib": $CAPPED_MIB, "capped_connections": $CAPPED_CONNS,
 "big_mib": $BIG_MIB, "kill_mib": $KILL_MIB, "kill_connections": $KILL_CONNS,
 "capped_tools": $(printf '%s\n' "${CAPPED_TOOLS[@]}" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))'),
 "big_tools": $(printf '%s\n' "${BIG_TOOLS[@]}" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))'),
 "encrypt_tools": $(printf '%s\n' "${ENCRYPT_TOOLS[@]}" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))')}
EOF
{
    echo "## claudedl vs curl vs aria2c ($(date -u +%Y-%m-%dT%H:%MZ), ROUNDS=$ROUNDS, $(nproc) cores)"
    echo
    echo "Load average before the runs: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running on the machine shows up in the timings)."
    echo
    echo "claudedl: \`$("$BIN" --version 2>/dev/null || echo claudedl)\` ($BUILT_FROM); $(aria2c --version | head -n 1); $(curl --version | head -n 1 | cut -d' ' -f1-2); $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo
    python3 "$LIB" report "$RESULTS" "$KILLS" "$W/params.json"
} >"$W/report.md"
if [[ -n ${REPORT:-} ]]; then cp "$W/report.md" "$REPORT"; fi
cat "$W/report.md"
