"""The benchmark behind `make bench` (run as `python deploy/benchmark.py`).

- `load`: the orders, placed in a closed loop or on an open loop's schedule;
- `observe`: each order's progress, timestamped from the events on the broker;
- `cpu`: CPU time and memory of process trees, from /proc;
- `servers`: the run's own RabbitMQ virtual host, PostgreSQL's server statistics;
- `report`: the figures, as JSON and as text, and medians side by side;
- `run`: one run, from a fresh system to its removal; `cli`: the options and the runs.
"""
