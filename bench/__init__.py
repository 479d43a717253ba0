"""Side-by-side benchmark harness: direct upstream, nginx and fastproxy, on one machine, one run.

Run it with ``scripts/bench`` or ``python -m bench.run`` from the repository root.
"""
