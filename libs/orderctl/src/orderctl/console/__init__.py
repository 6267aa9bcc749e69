"""The operator console: orderctl's web face (`orderctl console`).

Server-rendered pages over what the CLI reads: each service's HTTP API (with the operator
token, as `orderctl audit` calls them) and RabbitMQ (the operator's account). It never reads
a service's database. Live parts follow the order events through its own queue on the
broker (`servicekit.live`), pushed to the browser as server-sent events.
"""
