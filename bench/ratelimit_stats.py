#!/usr/bin/env python3
"""Helpers for bench/ratelimit.sh (standard library only, Python 3.11).

Subcommands:
  record RESULTS STATS SCENARIO CLIENT EXIT [GOAL_429]
                       append one JSON line to RESULTS: the run and STATS (a file holding the
                       answer of GET /_mock/stats)
  report RESULTS       print the Markdown table of every recorded run

The mock counts every API request of the window (from the reset to the stats read) by status,
and `allowed`: the tokens in its bucket at the reset plus its limit's rate integrated over the
window (the limit change included). From those:
  accepted     = requests that did not get 429
  429s/1,000   = 429s per 1,000 requests sent
  achieved     = accepted per minute of the window
  of rate      = accepted / (the limit's rate over the window): the issue's utilisation,
                 achieved / allowed requests per minute; the goal is judged on it
  of bucket    = accepted / allowed, where allowed also counts the tokens in the bucket at
                 the start (a client may spend a full 600-token bucket at once)
"""

import json
import sys


def record(results, stats_path, scenario, client, exit_code, goal_429="1"):
    with open(stats_path) as f:
        stats = json.load(f)
    row = {
        "scenario": scenario,
        "client": client,
        "exit": int(exit_code),
        "goal_429": float(goal_429),
        "stats": stats,
    }
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")


def figures(row):
    stats = row["stats"]
    requests = stats["requests"]
    limited = stats["by_status"].get("429", 0)
    accepted = requests - limited
    secs = stats["elapsed_secs"]
    allowed = stats.get("allowed")
    utilisation = accepted / allowed if allowed else None
    by_rate = allowed - (stats.get("capacity") or 0) if allowed else None
    of_rate = accepted / by_rate if by_rate else None
    per_1000 = 1000 * limited / requests if requests else 0.0
    return {
        "requests": requests,
        "limited": limited,
        "per_1000": per_1000,
        "accepted": accepted,
        "per_min": 60 * accepted / secs if secs else 0.0,
        "allowed": allowed,
        "utilisation": utilisation,
        "of_rate": of_rate,
        "secs": secs,
        "others": {k: v for k, v in stats["by_status"].items() if k not in ("200", "429")},
    }


def verdict(row, f):
    if f["of_rate"] is None:
        return "n/a"
    good = f["of_rate"] >= 0.97 and f["per_1000"] <= row["goal_429"]
    return "yes" if good else "no"


def report(results):
    with open(results) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    print(
        "| scenario | client | duration | requests | 429s | 429s / 1,000 | accepted "
        "| achieved req/min | utilisation of rate | allowed incl. bucket | utilisation of bucket "
        "| meets claudedl's goal | exit, other statuses |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        f = figures(row)
        utilisation = "n/a" if f["utilisation"] is None else f"{100 * f['utilisation']:.1f} %"
        of_rate = "n/a" if f["of_rate"] is None else f"{100 * f['of_rate']:.1f} %"
        allowed = "n/a" if f["allowed"] is None else f"{f['allowed']:.0f}"
        others = ", ".join(f"{k}: {v}" for k, v in sorted(f["others"].items()))
        notes = f"exit {row['exit']}" + (f"; {others}" if others else "")
        print(
            f"| {row['scenario']} | {row['client']} | {f['secs']:.1f} s | {f['requests']} "
            f"| {f['limited']} | {f['per_1000']:.1f} | {f['accepted']} | {f['per_min']:.0f} "
            f"| {of_rate} | {allowed} | {utilisation} | {verdict(row, f)} | {notes} |"
        )


def main():
    command, args = (sys.argv[1:2] or [""])[0], sys.argv[2:]
    commands = {"record": record, "report": report}
    if command not in commands:
        sys.exit(__doc__)
    commands[command](*args)


if __name__ == "__main__":
    main()
