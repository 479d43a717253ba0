"""What auditing costs a worker per proxied request, in-process, hot and cold.

bench.micro_path's exchange (fake transports, a wrk-like request, an nginx-like response) run
with and without an AuditClient connected to a real writer process (fsync off: the writer's own
cost is fastproxy.audit.measure's). The client runs on a uvloop loop, which gets a turn between
measurements to send batches and read acknowledgements, as a worker's would between reads.
The cold figures evict L1 and L2 before each exchange (see bench.micro_path.cold_of), the
figure end-to-end costs follow. ``python -m bench.micro_audit``
"""

import argparse
import asyncio
import gc
import os
import tempfile

import uvloop

from bench.micro_path import best_of, cold_of, fastproxy_exchange
from fastproxy.audit import AuditShared, WriterEndpoint
from fastproxy.audit.measure import running_writer, welcomed_client


def measure(directory: str, number: int = 20000, cold_number: int = 2000) -> dict[str, tuple[float, float]]:
    """{"plain" | "audit": (hot us, cold us)} per exchange."""
    found: dict[str, tuple[float, float]] = {}

    async def run(endpoint: WriterEndpoint, shared: AuditShared) -> None:
        loop = asyncio.get_running_loop()
        slot, _ = shared.claim()
        # Room for every record of the run: acknowledgements come only between measurements.
        audit = await welcomed_client(endpoint, shared, slot, queue_max=10**7)
        cases = {"plain": fastproxy_exchange(loop), "audit": fastproxy_exchange(loop, audit)}
        # As a worker runs once booted: what exists now frozen, the young generation collected rarely.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        for name, one in cases.items():
            hot = best_of(one, repeat=5, number=number)
            await asyncio.sleep(0.1)  # the loop's turn: sends and acknowledgements
            cold = cold_of(one, repeat=7, number=cold_number)
            await asyncio.sleep(0.1)
            found[name] = (hot, cold)
        await audit.drain(10)
        audit.close()

    with (
        running_writer(os.path.join(directory, "audit.jsonl")) as (endpoint, shared),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(run(endpoint, shared))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.micro_audit", description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        found = measure(directory)
    (plain_hot, plain_cold), (audit_hot, audit_cold) = found["plain"], found["audit"]
    print(f"without audit: {plain_hot:.2f} us per request hot, {plain_cold:.2f} cold")
    print(
        f"with audit:    {audit_hot:.2f} us per request hot (+{audit_hot - plain_hot:.2f}), "
        f"{audit_cold:.2f} cold (+{audit_cold - plain_cold:.2f})"
    )


if __name__ == "__main__":
    main()
