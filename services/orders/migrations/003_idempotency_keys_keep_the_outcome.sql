-- An idempotency key keeps what placing the order did (which order, left in which status),
-- no longer the HTTP answer: the HTTP entrypoint builds the answer from that outcome.
-- Every row written before answered 202 with exactly {"order_id", "status"}, the row's own
-- order id: checked first, so dropping the stored answer loses nothing and a replay of such
-- a row answers as it did.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM idempotency_keys
        WHERE status_code <> 202
           OR response->>'order_id' IS DISTINCT FROM order_id::text
           OR response->>'status' IS NULL
           OR response - 'order_id' - 'status' <> '{}'::jsonb
    ) THEN
        RAISE EXCEPTION 'idempotency_keys holds an answer its order id and status cannot rebuild';
    END IF;
END $$;

ALTER TABLE idempotency_keys ADD COLUMN status text;
UPDATE idempotency_keys SET status = response->>'status';
ALTER TABLE idempotency_keys
    ALTER COLUMN status SET NOT NULL,
    DROP COLUMN status_code,
    DROP COLUMN response;
