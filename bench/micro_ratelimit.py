"""What a rate-limit decision costs: one process, two processes on one key, and the table's memory.

Method. Per call: ``time.perf_counter_ns()`` read right before and right after every single
``table.decide()`` -- nothing else between the reads: the Python call itself (argument parsing, the
hash, the probe, the CAS, the second clock read, the result tuple) -- less the median cost of an
empty pair of reads, measured the same way in the same run; median and p99 over all calls (the
clock ticks in steps of about 10 ns here). Per batch: 1000 calls in a plain loop timed as a whole,
divided by 1000 (no timer in the loop, the loop's own cost included); median and p99 over the
batches. The per-call figure has the finer tail, the batch figure no timer bias.

Cases: "allowed" (a limit never reached: every call writes its slot), "limited" (a key over its
limit: reads only), "10k keys" (10 000 keys spread over a 1M-slot table: cache misses), and two
processes forked after the table, on 2 cores, both deciding one key that always admits (every call
a CAS on the same cache line), against the same two processes on two keys.

``python -m bench.micro_ratelimit [--calls N]``
"""

from __future__ import annotations

import argparse
import os
import struct
import time

from fastproxy.ratelimit import new_table, require_native
from fastproxy.ratelimit._gcra import Table

NEVER = (1, 1 << 40)  # interval 1 ns, a huge burst: always admitted, every call writes
ALWAYS = (10**12, 0)  # one request per 1000 s: after the first, always limited


def _percentiles(samples: list[int]) -> tuple[float, float]:
    samples.sort()
    return float(samples[len(samples) // 2]), float(samples[int(len(samples) * 0.99)])


def timer_cost(calls: int) -> int:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        start = clock()
        samples.append(clock() - start)
    return int(_percentiles(samples)[0])


def per_call(
    table: Table, keys: list[bytes] | list[str], limit: tuple[int, int], calls: int, overhead: int
) -> tuple[float, float]:
    """(median, p99) ns of single decide() calls, each timed alone, less the timer's own cost."""
    clock = time.perf_counter_ns
    decide = table.decide
    interval, burst = limit
    count = len(keys)
    samples = []
    for i in range(calls):
        key = keys[i % count]
        start = clock()
        decide(key, interval, burst)
        samples.append(clock() - start - overhead)
    return _percentiles(samples)


def per_batch(
    table: Table, keys: list[bytes] | list[str], limit: tuple[int, int], batches: int
) -> tuple[float, float]:
    """(median, p99) ns per call of batches of 1000 calls, each batch timed as a whole."""
    clock = time.perf_counter_ns
    decide = table.decide
    interval, burst = limit
    count = len(keys)
    means = []
    for b in range(batches):
        base = b * 1000
        start = clock()
        for i in range(base, base + 1000):
            decide(keys[i % count], interval, burst)
        means.append((clock() - start) // 1000)
    return _percentiles(means)


def single_process(calls: int, overhead: int) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    table = new_table(1 << 20)
    cases: list[tuple[str, list[bytes] | list[str], tuple[int, int]]] = [
        ("allowed, bytes key", [b"user-1"], NEVER),
        ("allowed, str key", ["user-2"], NEVER),
        ("limited", [b"user-3"], ALWAYS),
        ("10k keys, 1M slots", [b"user-%d" % k for k in range(10_000)], NEVER),
    ]
    rows = []
    for name, keys, limit in cases:
        per_batch(table, keys, limit, 20)  # warm up: slots claimed, caches and predictors trained
        rows.append(
            (
                name,
                per_call(table, keys, limit, calls, overhead),
                per_batch(table, keys, limit, calls // 1000),
            )
        )
    return rows


def _contend(table: Table, keys: list[bytes], calls: int, overhead: int) -> list[tuple[float, float]]:
    """Forks one child per key; they start together and time their calls; their (median, p99)."""
    start_at = time.monotonic_ns() + 200_000_000
    children = []
    for key in keys:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(read_end)
                per_batch(table, [key], NEVER, 5)
                time.sleep(max(0, start_at - time.monotonic_ns()) / 1e9)
                median, p99 = per_call(table, [key], NEVER, calls, overhead)
                os.write(write_end, struct.pack("<dd", median, p99))
            finally:
                os._exit(0)
        os.close(write_end)
        children.append((pid, read_end))
    results = []
    for pid, read_end in children:
        with os.fdopen(read_end, "rb") as f:
            results.append(struct.unpack("<dd", f.read()))
        os.waitpid(pid, 0)
    return results


def contention(calls: int, overhead: int) -> list[tuple[str, list[tuple[float, float]]]]:
    table = new_table(1 << 20)
    return [
        ("1 process, 1 key", _contend(table, [b"alone-1"], calls, overhead)),
        ("2 processes, 2 keys", _contend(table, [b"alone-1", b"alone-2"], calls, overhead)),
        ("2 processes, 1 key", _contend(table, [b"shared", b"shared"], calls, overhead)),
    ]


def _rss_shmem_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1])
    return -1


def memory() -> tuple[int, int]:
    """(bytes mapped, KiB resident once every page is touched) for 1M slots."""
    before = _rss_shmem_kib()
    table = new_table(1 << 20)
    table.live_slots()  # reads every slot: every page becomes resident
    return table.nbytes, _rss_shmem_kib() - before


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.micro_ratelimit", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="timed calls per case")
    args = parser.parse_args()
    require_native()
    overhead = timer_cost(args.calls)
    print(f"decision cost, ns per call (perf_counter_ns pair: {overhead} ns, subtracted per call)")
    print(f"  {'case':28} {'call p50':>9} {'call p99':>9} {'batch p50':>10} {'batch p99':>10}")
    for name, (c50, c99), (b50, b99) in single_process(args.calls, overhead):
        print(f"  {name:28} {c50:9.0f} {c99:9.0f} {b50:10.0f} {b99:10.0f}")
    print(f"processes forked after the table, each {args.calls} calls, always admitted (ns per call)")
    print(f"  {'case':28} {'call p50':>9} {'call p99':>9}   (one figure pair per process)")
    for name, results in contention(args.calls, overhead):
        figures = "  ".join(f"{m:5.0f} {p:5.0f}" for m, p in results)
        print(f"  {name:28} {figures}")
    nbytes, resident_kib = memory()
    print(
        f"memory for 1M slots: {nbytes} bytes mapped ({nbytes / 2**20:.2f} MiB), {resident_kib} KiB resident"
    )
    print(f"CPUs: {os.cpu_count()}")


if __name__ == "__main__":
    main()
