#!/usr/bin/env python3
"""Helpers for bench/budget.sh (standard library only, Python 3.11).

  record RESULTS SCENARIO CLIENT EXIT STARTED ENDED STATS OUT FILES TOTAL_BYTES RPM CAP [BATCHES]
      append one JSON line: the run, the mock's /_mock/stats answer (STATS) and the client's
      JSON output (OUT: claudedl's --json summary, or the naive client's line); BATCHES: how
      many ended batches the mock serves (each one more item, one more request)
  report RESULTS      the Markdown table
  section DOC TEXT    put TEXT in DOC as its "## The request budget" section (replacing it)
"""

import json
import math
import sys

HEADING = "## The request budget (issue 11)"
CONNECTIONS = 8
# claudedl's default --max-connections: the bandwidth bound of a many-file scenario (E).
MAX_CONNECTIONS = 16


def load(path):
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {}


def record(results, scenario, client, code, started, ended, stats, out, files, size, rpm, cap, batches=0):
    row = {
        "scenario": scenario,
        "client": client,
        "exit": int(code),
        "wall": float(ended) - float(started),
        "stats": load(stats),
        "out": load(out),
        "files": int(files),
        "total_bytes": int(size),
        "rpm": float(rpm),
        "cap": int(cap),
        "batches": int(batches),
    }
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")


def list_pages(row):
    """File list pages, plus the batch list page when there are batches."""
    batches = row.get("batches", 0)
    return math.ceil(row["files"] / 1000) + math.ceil(batches / 1000)


def bound(row):
    files, rps = row["files"], row["rpm"] / 60.0
    needed = files + row.get("batches", 0) + list_pages(row)
    # Rows recorded before total_bytes existed held the bytes of one file.
    total = row.get("total_bytes", row.get("bytes", 0) * files)
    if row["cap"] and row["scenario"] == "E":
        return max(needed / rps, total / (MAX_CONNECTIONS * row["cap"]))
    if row["cap"]:
        return total / (CONNECTIONS * row["cap"]) + CONNECTIONS / rps
    return needed / rps


def figures(row):
    stats, out = row["stats"], row["out"]
    files = row["files"] + row.get("batches", 0)
    requests = stats.get("requests", 0)
    throttled = stats.get("by_status", {}).get("429", 0)
    if "requests" in out and isinstance(out["requests"], dict):
        content = out["requests"].get("content_requests", 0)
        done = out.get("downloaded", 0) + out.get("batches_downloaded", 0)
    else:
        content = requests - throttled - list_pages(row)
        done = out.get("downloaded", 0)
    wall = row["wall"]
    return {
        "done": f"{done}/{files}",
        "requests": requests,
        "429s": throttled,
        "per_file": content / files if files else 0,
        "wall": wall,
        "bound": bound(row),
        "ratio": wall / bound(row),
    }


def report(results):
    lines = [
        "| scenario | client | files done | requests | 429s | content req/file | wall | bound | wall ÷ bound | exit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    with open(results) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        f = figures(row)
        lines.append(
            f"| {row['scenario']} | {row['client']} | {f['done']} | {f['requests']} | {f['429s']} "
            f"| {f['per_file']:.2f} | {f['wall']:.1f} s | {f['bound']:.1f} s | {f['ratio']:.2f} "
            f"| {row['exit']} |"
        )
    print("\n".join(lines))


def section(doc, text):
    try:
        with open(doc) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    start = old.find(HEADING)
    if start >= 0:
        rest = old.find("\n## ", start + len(HEADING))
        old = old[:start] + (old[rest + 1 :] if rest >= 0 else "")
    with open(doc, "w") as f:
        f.write(old.rstrip("\n") + "\n\n" + text.strip("\n") + "\n")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    {"record": record, "report": report, "section": section}[command](*args)


if __name__ == "__main__":
    main()
