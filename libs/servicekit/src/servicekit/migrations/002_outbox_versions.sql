-- One event may be published in two versions of its contract during a rollout (see
-- contracts.versions): one row per version, under the same event id.
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_version UNIQUE (event_id, routing_key);
