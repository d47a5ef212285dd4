#!/usr/bin/env python3
"""Helpers for bench/compare.sh (standard library only).

Subcommands:
  ports N                              print N free TCP ports on 127.0.0.1
  wait-port PORT SECS                  wait until 127.0.0.1:PORT accepts connections
  logsum FILE OFFSET FIELD             sum field FIELD (0-based, whitespace split) of the lines
                                       after byte OFFSET; prints "SUM LINES"
  json-field FILE KEY                  print KEY of the first JSON object in FILE (or "")
  sha256 FILE                          hex SHA-256 (hashlib: OpenSSL, SHA-NI where available;
                                       coreutils sha256sum is ~4x slower here)
  done-bytes STATE                     bytes listed as done in a claudedl .part.json
  kill-at STATE PID TARGET TIMEOUT     poll STATE every 5 ms; once the done bytes reach TARGET, wait
                                       a random 0..KILL_JITTER s (default 0.3) and SIGKILL PID;
                                       prints "DONE_SEEN ELAPSED_S" (or "exited ..."/"timeout ...")
  report RESULTS KILLS PARAMS          print the markdown tables
"""

import hashlib
import json
import os
import random
import signal
import socket
import statistics
import sys
import time

MIB = 1024 * 1024


def ports(n):
    socks = []
    for _ in range(int(n)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def wait_port(port, secs):
    deadline = time.monotonic() + float(secs)
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {secs}s")


def logsum(path, offset, field):
    total = lines = 0
    with open(path, "rb") as f:
        f.seek(int(offset))
        for line in f:
            parts = line.split()
            if len(parts) > int(field):
                total += int(parts[int(field)])
                lines += 1
    print(total, lines)


def json_field(path, key):
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    value = json.loads(line).get(key)
                    print("" if value is None else value)
                    return
    except (OSError, ValueError):
        pass
    print("")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    print(h.hexdigest())


def done_bytes(path):
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return sum(end - start for start, end in state.get("done", []))


def kill_at(path, pid, target, timeout):
    pid, target = int(pid), int(target)
    start = time.monotonic()
    while time.monotonic() - start < float(timeout):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("exited", f"{time.monotonic() - start:.2f}")
            return
        done = done_bytes(path)
        if done is not None and done >= target:
            # The state file changes right after a checkpoint: killing at once would always
            # land just after one (the best case). Wait a random fraction of a few checkpoint
            # intervals (100 ms each) so the kill falls anywhere in the cycle.
            time.sleep(random.uniform(0, float(os.environ.get("KILL_JITTER", "0.3"))))
            os.kill(pid, signal.SIGKILL)
            print(done, f"{time.monotonic() - start:.2f}")
            return
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    print("timeout", f"{time.monotonic() - start:.2f}")


# ---- report ----

def read_tsv(path):
    rows = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            if line.strip():
                rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))
    return rows


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(results_path, kills_path, params_path):
    with open(params_path) as f:
        params = json.load(f)
    rows = read_tsv(results_path)
    kills = read_tsv(kills_path) if os.path.exists(kills_path) else []
    goals = []

    def group(scenario, tool):
        return [r for r in rows if r["scenario"] == scenario and r["tool"] == tool]

    def failures(runs):
        bad = [r for r in runs if r["exit"] != "0" or r["ok"] != "yes"]
        return f"{len(bad)}/{len(runs)}"

    # Scenario 1
    cap = params["cap_mib_s"] * params["capped_connections"]
    if any(r["scenario"] == "capped" for r in rows):
        print(f"### 1. Capped: {params['capped_connections']} connections x "
              f"{params['cap_mib_s']} MiB/s each (nginx stream proxy_download_rate), "
              f"{params['capped_mib']} MiB file\n")
        print("MiB/s = 2^20 bytes/s; MB/s = 10^6 bytes/s. Rate = bytes of the output / wall "
              "time of the process (median over rounds). 'served' = response body bytes the "
              "origin nginx logged ($body_bytes_sent) for the run; 'conns' = TCP connections "
              "through the proxy. The cap is nginx's: each connection may have received "
              "rate x (whole seconds since it opened + 1) bytes, i.e. a 1 s credit at the start "
              "of every connection, so a 3 s transfer can beat 2 MiB/s per connection.\n")
        print("| tool | bytes | wall s (median) | MiB/s (median) | MB/s | % of "
              f"{cap:g} MiB/s | served MiB (median) | conns (median) | failed runs |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rates = {}
    for tool in params["capped_tools"]:
        runs = group("capped", tool)
        if not runs:
            continue
        rate = med([num(r["size"]) / num(r["wall"]) / MIB
                    for r in runs if r["exit"] == "0" and num(r["wall"])])
        rates[tool] = rate
        wall = med([num(r["wall"]) for r in runs if r["exit"] == "0"])
        served = med([num(r["served_http"]) / MIB for r in runs])
        conns = med([num(r["conns_proxy"]) for r in runs])
        size = runs[0]["size"]
        print(f"| {tool} | {size} | {fmt(wall)} | {fmt(rate)} | "
              f"{fmt(rate * MIB / 1e6 if rate else None)} | "
              f"{fmt(rate / cap * 100 if rate else None, 1)} % | {fmt(served, 1)} | "
              f"{fmt(conns, 0)} | {failures(runs)} |")
    print()
    c, a = rates.get("claudedl -c 10"), rates.get("aria2c -x10 -s10 -k1M")
    if rates:
        goals.append(("1. capped: claudedl >= 95 % of 10 x 2 MiB/s",
                      f">= {0.95 * cap:.1f} MiB/s", f"{fmt(c)} MiB/s",
                      c is not None and c >= 0.95 * cap))
        goals.append(("1. capped: claudedl >= aria2c", f">= {fmt(a)} MiB/s", f"{fmt(c)} MiB/s",
                      c is not None and a is not None and c >= a))

    # Scenario 2 and 3
    if any(r["scenario"] == "uncapped" for r in rows):
        print(f"### 2. and 3. Uncapped, {params['big_mib']} MiB file to disk (direct nginx)\n")
        print("Median over rounds; CPU = user + sys of the client process (and its children) "
              "from /usr/bin/time; peak RSS = %M (max over rounds).\n")
        print("'over-served' = body bytes nginx logged for the run minus the file size "
              "(bytes sent on connections the client dropped early; median).\n")
        print("| tool | wall s (median) | MiB/s | CPU s (median) | user s | sys s | peak RSS MiB "
              "(max) | over-served MiB | requests | walls s (all rounds) | failed runs |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    walls, cpus, rss = {}, {}, {}
    for tool in params["big_tools"]:
        runs = group("uncapped", tool)
        if not runs:
            continue
        good = [r for r in runs if r["exit"] == "0"]
        wall = med([num(r["wall"]) for r in good])
        cpu = med([num(r["user"]) + num(r["sys"]) for r in good])
        user = med([num(r["user"]) for r in good])
        sys_ = med([num(r["sys"]) for r in good])
        peak = max((num(r["rss_kb"]) / 1024 for r in runs), default=None)
        walls[tool], cpus[tool], rss[tool] = wall, cpu, peak
        rate = params["big_mib"] / wall if wall else None
        all_walls = " ".join(r["wall"] for r in runs)
        over = med([(num(r["served_http"]) - num(r["size"])) / MIB for r in good])
        reqs = med([num(r["reqs_http"]) for r in good])
        print(f"| {tool} | {fmt(wall)} | {fmt(rate, 0)} | {fmt(cpu)} | {fmt(user)} | "
              f"{fmt(sys_)} | {fmt(peak, 1)} | {fmt(over, 1)} | {fmt(reqs, 0)} | {all_walls} | "
              f"{failures(runs)} |")
    print()
    cw, uw = walls.get("claudedl -c 8"), walls.get("curl -o")
    cc, ac = cpus.get("claudedl -c 8"), cpus.get("aria2c -x8 -s8")
    r16 = rss.get("claudedl -c 16")
    if walls:
        goals.append(("2. uncapped: claudedl wall <= curl's", f"<= {fmt(uw)} s", f"{fmt(cw)} s",
                      cw is not None and uw is not None and cw <= uw))
        goals.append(("2. uncapped: claudedl CPU <= aria2c's", f"<= {fmt(ac)} s",
                      f"{fmt(cc)} s", cc is not None and ac is not None and cc <= ac))
        goals.append(("3. peak RSS of claudedl -c 16 (1 GiB)", "<= 64 MiB",
                      f"{fmt(r16, 1)} MiB", r16 is not None and r16 <= 64))

    # Scenario 5
    if any(r["scenario"] == "encrypt" for r in rows):
        print(f"### 5. The cost of encryption: {params['big_mib']} MiB, uncapped, -c 8\n")
        print("The same download plain and with `--encrypt-to` (an age file; checked by "
              "decrypting it with the age CLI, untimed), interleaved. Median over rounds.\n")
        print("| tool | wall s (median) | MiB/s | CPU s (median) | peak RSS MiB (max) | "
              "requests | walls s (all rounds) | failed runs |")
        print("|---|---:|---:|---:|---:|---:|---|---:|")
    enc_walls = {}
    for tool in params.get("encrypt_tools", []):
        runs = group("encrypt", tool)
        if not runs:
            continue
        good = [r for r in runs if r["exit"] == "0" and r["ok"] == "yes"]
        wall = med([num(r["wall"]) for r in good])
        cpu = med([num(r["user"]) + num(r["sys"]) for r in good])
        peak = max((num(r["rss_kb"]) / 1024 for r in runs), default=None)
        enc_walls[tool] = wall
        rate = params["big_mib"] / wall if wall else None
        all_walls = " ".join(r["wall"] for r in runs)
        reqs = med([num(r["reqs_http"]) for r in good])
        print(f"| {tool} | {fmt(wall)} | {fmt(rate, 0)} | {fmt(cpu)} | {fmt(peak, 1)} | "
              f"{fmt(reqs, 0)} | {all_walls} | {failures(runs)} |")
    base_plain, base_sealed = (enc_walls.get(f"baseline -c 8{t}")
                               for t in (", plain", " --encrypt-to"))
    if base_plain and base_sealed:
        extra = (base_sealed / base_plain - 1) * 100
        print(f"\nBaseline: encrypted / plain wall time: {base_sealed / base_plain:.3f} "
              f"({extra:+.1f} %).")
    plain, sealed = (enc_walls.get(t) for t in params.get("encrypt_tools", [None, None])[:2])
    if plain and sealed:
        extra = (sealed / plain - 1) * 100
        print(f"\nEncrypted / plain wall time: {sealed / plain:.3f} ({extra:+.1f} %).\n")
        goals.append(("5. --encrypt-to: wall <= 115 % of plain", f"<= {fmt(plain * 1.15)} s",
                      f"{fmt(sealed)} s ({extra:+.1f} %)", sealed <= plain * 1.15))

    # Scenario 4
    if kills:
        print(f"### 4. kill -9 at ~50 % then resume ({params['kill_mib']} MiB through the capped "
              f"proxy, -c {params['kill_connections']})\n")
        print("served = response body bytes logged by the origin nginx ($body_bytes_sent) over "
              "both runs; proxied = bytes the stream proxy sent to the client ($bytes_sent) over "
              "both runs. refetched = that total - file size. Where the proxied excess arises: "
              "'lost at kill' = proxied in run 1 - bytes the state file holds as done; 'run 2 "
              "overshoot' = proxied in run 2 - bytes run 2 wrote.\n")
        print("| tool | round | done at kill | killed after s | run 2 resumed_from | run 2 bytes | "
              "served | refetched (HTTP log) | % | proxied | refetched (proxy) | % | "
              "lost at kill | run 2 overshoot | sha256 |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        pcts = []
        for k in kills:
            size = int(k["size"])
            served, proxied = int(k["served_http"]), int(k["sent_proxy"])
            ref, pref = served - size, proxied - size
            pct, ppct = ref / size * 100, pref / size * 100
            if k["sha_ok"] == "yes" and k.get("tool", "claudedl") == "claudedl":
                pcts.append((pct, ref, ppct, pref))
            done_pct = f"{int(k['done_at_kill']) / size * 100:.1f} %" \
                if k["done_at_kill"].isdigit() else k["done_at_kill"]
            lost = over = "n/a"
            if k.get("sent_proxy_run1", "").isdigit() and k["done_at_kill"].isdigit():
                sent1 = int(k["sent_proxy_run1"])
                lost = sent1 - int(k["done_at_kill"])
                if k["run2_bytes"].isdigit():
                    over = proxied - sent1 - int(k["run2_bytes"])
            print(f"| {k.get('tool', 'claudedl')} | {k['round']} | {done_pct} | {k['kill_after']} | {k['resumed_from']} | "
                  f"{k['run2_bytes']} | {served} | {ref} | {pct:.2f} % | {proxied} | {pref} | "
                  f"{ppct:.2f} % | {lost} | {over} | {k['sha_ok']} |")
        print()
        all_ok = all(k["sha_ok"] == "yes" for k in kills)
        goals.append(("4. resume: sha256 of the result = source", "all rounds",
                      f"{sum(k['sha_ok'] == 'yes' for k in kills)}/{len(kills)}", all_ok))
        if pcts:
            mp = med([p[0] for p in pcts])
            mb = med([p[1] for p in pcts])
            worst = max(p[0] for p in pcts)
            goals.append(("4. resume: refetched <= 2 % (HTTP log)", "<= 2 %",
                          f"median {mp:.2f} % ({mb / MIB:.2f} MiB), worst {worst:.2f} %",
                          worst <= 2))

    print("### Goals\n")
    print("| goal | target | measured | met |")
    print("|---|---|---|---|")
    for name, target, measured, met in goals:
        print(f"| {name} | {target} | {measured} | {'yes' if met else '**no**'} |")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ports":
        ports(*args)
    elif cmd == "wait-port":
        wait_port(*args)
    elif cmd == "logsum":
        logsum(*args)
    elif cmd == "json-field":
        json_field(*args)
    elif cmd == "sha256":
        sha256(*args)
    elif cmd == "done-bytes":
        print(done_bytes(args[0]) or 0)
    elif cmd == "kill-at":
        kill_at(*args)
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main()
