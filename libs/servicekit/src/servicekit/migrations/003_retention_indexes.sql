-- Retention (servicekit.retention) deletes the oldest rows batch by batch: each batch an
-- index range, never a scan of the table. Only published outbox rows are ever deleted.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX processed_messages_by_age ON processed_messages (processed_at);
