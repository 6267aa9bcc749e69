"""Benchmark the system: start it on free ports, place orders, report, stop it.

    make bench BENCH_ARGS="--orders 1000 --concurrency 16"
    uv run python deploy/benchmark.py --rate 100 --duration 20
    uv run python deploy/benchmark.py --tree /tmp/base --tree . --repeat 3

`--help` lists the options; the README's Benchmark section explains every figure.
"""

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
