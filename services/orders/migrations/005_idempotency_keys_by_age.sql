-- Idempotency keys expire (ORDERS_IDEMPOTENCY_KEY_RETENTION): the retention job deletes the
-- oldest batch by batch, each an index range.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
