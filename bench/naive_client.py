#!/usr/bin/env python3
"""A naive Files API downloader for bench/ratelimit.sh: the shape of the original design's
RetryDownloader, written for the comparison only (it is not part of claudedl).

    naive_client.py BASE_URL SECS [--workers N] [--ranges N] [--out DIR]

The key comes from $ANTHROPIC_API_KEY. It lists every file (GET /v1/files?limit=1000, following
next_page) and every message batch (GET /v1/messages/batches?limit=1000, following last_id),
then a pool of N threads (default 8) downloads GET /v1/files/{id}/content and each ended
batch's results_url, each thread on one keep-alive connection. It never reads the anthropic-ratelimit-* headers: on a 429
it sleeps retry-after (else an exponential backoff, 0.5 s doubling up to 8 s), halves the
number of threads allowed to work (never below 1, never back up) and retries. Everything stops
at SECS. With --ranges N (the original design's shape), each file of more than 1 MiB is fetched
as N byte ranges by N threads of its own (sizes from the listing), with the same backoff.
Only 127.0.0.1 URLs are accepted. Prints one JSON line:
{"downloaded", "files", "batches", "requests", "status_429", "errors", "secs", "workers_left"}
("files" counts the files listed, "batches" the ended batches, "downloaded" both).
Standard library only (Python 3.11).
"""

import argparse
import http.client
import json
import os
import queue
import sys
import threading
import time
import urllib.parse

VERSION = "2023-06-01"
MAX_ATTEMPTS = 50


class Budget:
    """The run's shared state: deadline, the thread cap and the counters."""

    def __init__(self, secs, workers):
        self.deadline = time.monotonic() + secs
        self.allowed_workers = workers
        self.requests = 0
        self.status_429 = 0
        self.errors = 0
        self.downloaded = 0
        self.lock = threading.Lock()

    def left(self):
        return self.deadline - time.monotonic()

    def count(self, status):
        with self.lock:
            self.requests += 1
            if status == 429:
                self.status_429 += 1
                self.allowed_workers = max(1, self.allowed_workers // 2)

    def may_work(self, index):
        with self.lock:
            return index < self.allowed_workers and self.left() > 0


class Client:
    """One keep-alive connection to the mock."""

    def __init__(self, base, key):
        url = urllib.parse.urlsplit(base)
        if url.hostname != "127.0.0.1":
            sys.exit(f"naive_client: only 127.0.0.1 is allowed, not {url.hostname!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.headers = {"x-api-key": key, "anthropic-version": VERSION}
        self.conn = None

    def get(self, path, timeout, extra=None):
        """(status, headers, body); reconnects once on a dropped keep-alive connection."""
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                self.conn.request("GET", path, headers={**self.headers, **(extra or {})})
                response = self.conn.getresponse()
                body = response.read()
                return response.status, response.headers, body
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def backoff_secs(headers, attempt):
    """retry-after when the server sent it, else 0.5 s doubling up to 8 s."""
    value = headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    return min(0.5 * 2**attempt, 8.0)


def fetch(client, budget, path, extra=None):
    """GET with retries on 429 (and 5xx); returns the body, or None when out of time or tries."""
    for attempt in range(MAX_ATTEMPTS):
        left = budget.left()
        if left <= 0:
            return None
        try:
            status, headers, body = client.get(path, max(1.0, min(left, 30.0)), extra)
        except (OSError, http.client.HTTPException):
            with budget.lock:
                budget.errors += 1
            time.sleep(min(0.5, max(0.0, budget.left())))
            continue
        budget.count(status)
        if status in (200, 206):
            return body
        if status != 429 and status < 500:
            with budget.lock:
                budget.errors += 1
            return None
        time.sleep(min(backoff_secs(headers, attempt), max(0.0, budget.left())))
    return None


def list_ids(client, budget):
    ids, page = [], None
    for _ in range(10_000):
        path = "/v1/files?limit=1000" + (f"&page={urllib.parse.quote(page)}" if page else "")
        body = fetch(client, budget, path)
        if body is None:
            break
        listing = json.loads(body)
        ids.extend((item["id"], item.get("size_bytes", 0)) for item in listing["data"])
        page = listing.get("next_page")
        if not page:
            break
    return ids


def list_batches(client, budget):
    """(results path, 0) for every ended batch."""
    paths, after = [], None
    for _ in range(10_000):
        path = "/v1/messages/batches?limit=1000" + (
            f"&after_id={urllib.parse.quote(after)}" if after else ""
        )
        body = fetch(client, budget, path)
        if body is None:
            break
        listing = json.loads(body)
        for batch in listing["data"]:
            if batch.get("processing_status") == "ended" and batch.get("results_url"):
                paths.append((urllib.parse.urlsplit(batch["results_url"]).path, 0))
        after = listing.get("last_id")
        if not listing.get("has_more") or not after:
            break
    return paths


def fetch_ranged(base, key, budget, path, size, n):
    """The file as n ranges fetched by n threads at once; None if any range failed."""
    step = -(-size // n)
    parts = [None] * n

    def one(i):
        extra = {"Range": f"bytes={i * step}-{min(size, (i + 1) * step) - 1}"}
        parts[i] = fetch(Client(base, key), budget, path, extra)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, budget.left()) + 35.0)
    return None if any(part is None for part in parts) else b"".join(parts)


def worker(index, base, key, budget, work, out, ranges):
    client = Client(base, key)
    while budget.may_work(index):
        try:
            path, size = work.get_nowait()
        except queue.Empty:
            return
        if ranges > 1 and size > 1024 * 1024:
            body = fetch_ranged(base, key, budget, path, size, ranges)
        else:
            body = fetch(client, budget, path)
        if body is None:
            continue
        if out:
            with open(os.path.join(out, urllib.parse.quote(path, safe="")), "wb") as f:
                f.write(body)
        with budget.lock:
            budget.downloaded += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("secs", type=float)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--ranges", type=int, default=1)
    parser.add_argument("--out", help="write the files here (default: discard)")
    args = parser.parse_args()
    key = os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        sys.exit("naive_client: set ANTHROPIC_API_KEY")
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    started = time.monotonic()
    budget = Budget(args.secs, args.workers)
    lister = Client(args.base_url, key)
    ids = list_ids(lister, budget)
    batches = list_batches(lister, budget)
    work = queue.Queue()
    for file_id, size in ids:
        work.put((f"/v1/files/{urllib.parse.quote(file_id)}/content", size))
    for item in batches:
        work.put(item)
    threads = [
        threading.Thread(
            target=worker,
            args=(i, args.base_url, key, budget, work, args.out, args.ranges),
            daemon=True,
        )
        for i in range(args.workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, budget.left()) + 35.0)
    summary = {
        "downloaded": budget.downloaded,
        "files": len(ids),
        "batches": len(batches),
        "requests": budget.requests,
        "status_429": budget.status_429,
        "errors": budget.errors,
        "secs": round(time.monotonic() - started, 3),
        "workers_left": budget.allowed_workers,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
