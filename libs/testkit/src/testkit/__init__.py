"""What every test suite shares; a dev-only workspace member, never a runtime dependency.

- `plugin`: the pytest plugin (`-p testkit.plugin`): fixtures `infrastructure`, `rabbitmq`,
  `databases`, `smtp_sink`
- `servers`: where RabbitMQ and PostgreSQL come from; a vhost and databases per test module
- `smtp`: an in-process SMTP sink that keeps what it receives
- `polling`: `eventually`, waiting with a deadline instead of a fixed sleep
- `broker`: publish, peek at a queue, tap the `events` exchange
- `services`: a service app in-process, or its CLI with seams of its composition root set
- `events`: the one builder of `order.created`
- `probes`: what a service committed (processed events, outbox rows) and its counters
"""
