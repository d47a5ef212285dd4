#!/usr/bin/env bash
# Fleet benchmarks (issue 14), release build, on the tests' throwaway PostgreSQL cluster and the
# in-process mock API (tests/it/fleet/bench.rs, tests/it/fleet.rs):
#
#   queue    claims + completions per second, 8 clients claiming 8 at a time (fleet::queue_throughput)
#   scaling  1, 2, 4 `claudedl worker` processes (-j 2 each), 96 × 512 KiB, the mock sending each
#            body at most 1 MiB/s: MiB/s and the ratio to one worker (bound: 2 MiB/s per worker)
#   small    10,000 × 4 KiB with no budget: one `claudedl sync -j 16`, then 1 and 4 workers
#            (-j 16 each): files/s, and the transactions that completed the workers' files
#   budget   4 workers sharing 1,200/min (burst 4) against a mock enforcing 1,200/min: achieved ÷
#            allowed from the first to the last content request, the busiest 1 s window, 429s
#
# Prints the machine's load before and after (the machine may be shared) and the BENCH lines.
# Knobs: SKIP_BUILD=1 (use the last release test build). Needs PostgreSQL's server binaries
# (apt-get install postgresql) and openssl, as the tests do. Loopback and a Unix socket only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo test --release --test it --no-run --quiet
fi
echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # test filter → its BENCH / items/s lines
  cargo test --release --quiet --test it "$1" -- --ignored --nocapture --test-threads=1 2>&1 \
    | grep -E "BENCH|items/s|test result: FAILED|panicked" || true
}
echo "== queue";   run fleet::queue_throughput
echo "== scaling"; run fleet::bench::bench_scaling
echo "== small";   run fleet::bench::bench_small_files
echo "== budget";  run fleet::bench::bench_budget_accuracy
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
