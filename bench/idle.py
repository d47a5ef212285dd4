#!/usr/bin/env python3
"""Where the cores idle during one run of a command (docs/benchmarks-small.md, session 11).

    perf record -a -g -e sched:sched_switch -e sched:sched_wakeup -o sched.data -- \\
        target/release/claudedl get -q -i urls.txt -d DIR
    perf script -i sched.data -F comm,tid,cpu,time,event,trace,ip,sym > sched.txt
    python3 bench/idle.py sched.txt [COMMAND]     # COMMAND: the traced program's name, claudedl

From the scheduler's switches and wake-ups, over the span of the traced command's threads:
how long one CPU, or every CPU, ran nothing; while one idled, what ran on the others and in
which system call each of the command's threads, and nginx's, was asleep; and which thread,
woken by whom, ended each idle stretch (a waker shown as `swapper` is an interrupt or a
wake-up queued from another CPU). Threads are named by role: `main`, `tokio+N` (N: its
thread id after main's, so the runtime's workers come first, then the blocking pool),
others by name with their digits as N.
"""
import collections
import re
import sys

SWITCH = re.compile(
    r"\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+): sched:(sched_switch|sched_wakeup): (.*)"
)


def read(path):
    """The events, each with the kernel stack that follows it (leaf first)."""
    events = []
    for line in open(path, errors="replace"):
        match = SWITCH.match(line)
        if match:
            comm, tid, cpu, t, kind, rest = match.groups()
            events.append(dict(comm=comm, tid=int(tid), cpu=int(cpu), t=float(t),
                               kind=kind, rest=rest, stack=[]))
        elif events and line.strip():
            parts = line.split(None, 1)
            if len(parts) == 2:
                events[-1]["stack"].append(parts[1].strip())
    return events


def asleep_in(stack):
    """The system call a thread went to sleep in, and the kernel functions below it."""
    frames = [f for f in stack if not f.startswith(("__schedule", "schedule", "["))]
    call = next((f for f in frames if f.startswith("__x64_sys_")), "?")
    inner = []
    for frame in frames:
        if frame.startswith(("__x64_sys_", "do_syscall_64")):
            break
        inner.append(frame)
    return f"{call}: {' < '.join(inner[:3])}"


def main(path, command="claudedl"):
    events = read(path)
    main_tid = next(e["tid"] for e in events if e["comm"] == command)

    def ours(comm, tid):
        return tid == main_tid or (comm.startswith("tokio") and tid > main_tid)

    def role(comm, tid):
        if tid == main_tid:
            return "main"
        if ours(comm, tid):
            return f"tokio+{tid - main_tid}"
        return re.sub(r"\d+", "N", comm)

    span = [e["t"] for e in events if ours(e["comm"], e["tid"])]
    start, end = min(span), max(span)
    cpus = {e["cpu"] for e in events}
    running, asleep, waker, idle_since = {}, {}, {}, {}
    one_idle = both_idle = 0.0
    busy_beside = collections.Counter()
    sleeping_beside = collections.Counter()
    ended_by, ended_count = collections.Counter(), collections.Counter()
    last = start
    for e in events:
        if e["kind"] == "sched_wakeup":
            woken = re.search(r"comm=(.*?) pid=(\d+)", e["rest"])
            waker[int(woken[2])] = role(e["comm"], e["tid"])
            continue
        if start < e["t"] < end:
            dt = e["t"] - last
            idle = [c for c in cpus if running.get(c, ("", 0))[1] == 0]
            if len(idle) == len(cpus):
                both_idle += dt
            elif idle:
                one_idle += dt
                for comm, tid in (running[c] for c in cpus if c not in idle):
                    busy_beside[role(comm, tid)] += dt
                for tid, (name, why) in asleep.items():
                    sleeping_beside[f"{name}: {why}"] += dt
            last = e["t"]
        prev = re.search(r"prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+)", e["rest"])
        nxt = re.search(r"next_comm=(.*?) next_pid=(\d+)", e["rest"])
        prev_comm, prev_tid, state = prev[1], int(prev[2]), prev[3]
        next_comm, next_tid = nxt[1], int(nxt[2])
        if prev_tid and state != "R" and (ours(prev_comm, prev_tid) or prev_comm.startswith("nginx")):
            asleep[prev_tid] = (role(prev_comm, prev_tid), asleep_in(e["stack"]))
        asleep.pop(next_tid, None)
        if next_tid == 0:
            idle_since[e["cpu"]] = e["t"]
        elif e["cpu"] in idle_since:
            idled = e["t"] - idle_since.pop(e["cpu"])
            if start < e["t"] < end:
                key = f"{role(next_comm, next_tid)} woken by {waker.get(next_tid, '?')}"
                ended_by[key] += idled
                ended_count[key] += 1
        running[e["cpu"]] = (next_comm, next_tid)

    ms = lambda s: f"{1000 * s:7.1f} ms"
    print(f"span of the command's threads {ms(end - start)}; every CPU idle {ms(both_idle)}; "
          f"some idle {ms(one_idle)}")
    print("\nWhile some CPU idled, the others ran:")
    for name, s in busy_beside.most_common(10):
        print(f"{ms(s)}  {name}")
    print("\nWhile some CPU idled, asleep:")
    for name, s in sleeping_beside.most_common(14):
        print(f"{ms(s)}  {name[:140]}")
    print("\nIdle stretches ended by (CPU time idle before, stretches):")
    for key, s in ended_by.most_common(14):
        print(f"{ms(s)} {ended_count[key]:6d}x  {key}")


if __name__ == "__main__":
    main(*sys.argv[1:])
