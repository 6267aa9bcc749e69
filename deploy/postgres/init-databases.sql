-- Run once by the postgres image (/docker-entrypoint-initdb.d) when its data volume is empty.
-- One database per service; each service also creates its own if missing, then migrates it.
CREATE DATABASE orders;
CREATE DATABASE email;
CREATE DATABASE inventory;
CREATE DATABASE shipping;
