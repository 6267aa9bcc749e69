#!/bin/sh
# Fill the passwords into definitions.json from the environment (`${VARIABLE}`, each required),
# then start RabbitMQ, which loads the result at boot (20-orderflow.conf).
set -eu
mkdir -p /tmp/orderflow
umask 077
awk '
{
  rest = $0; line = ""
  while (match(rest, /\$\{[A-Z_]+\}/)) {
    name = substr(rest, RSTART + 2, RLENGTH - 3)
    value = ENVIRON[name]
    if (value == "") { print name " is not set" > "/dev/stderr"; exit 1 }
    if (value ~ /["\\]/) { print name " may not contain \" or \\" > "/dev/stderr"; exit 1 }
    line = line substr(rest, 1, RSTART - 1) value
    rest = substr(rest, RSTART + RLENGTH)
  }
  print line rest
}' /etc/orderflow/definitions.json > /tmp/orderflow/definitions.json
if [ "$(id -u)" = 0 ]; then chown -R rabbitmq /tmp/orderflow; fi
exec docker-entrypoint.sh rabbitmq-server
