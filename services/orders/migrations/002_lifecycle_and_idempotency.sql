-- Issue 4: the order's whole life (shipped, cancelled), order.created v2 names, the
-- timeline, and idempotency keys for POST /orders.
ALTER TABLE orders ADD COLUMN customer_name text;
UPDATE orders SET customer_name = shipping_address->>'name';
ALTER TABLE orders ALTER COLUMN customer_name SET NOT NULL;
ALTER TABLE orders ADD COLUMN shipment_id uuid, ADD COLUMN tracking_number text;
ALTER TABLE orders ADD CONSTRAINT orders_status
    CHECK (status IN ('pending', 'confirmed', 'rejected', 'shipped', 'cancelled'));

-- The status an event moved the order to (NULL: recorded, nothing changed), and why not.
ALTER TABLE order_history ADD COLUMN status_after text, ADD COLUMN note text;
UPDATE order_history SET status_after = 'pending' WHERE event_type LIKE 'order.created.%';

-- A client's retry of POST /orders with the same key gets the first answer again.
CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash text        NOT NULL,
    order_id     uuid        NOT NULL REFERENCES orders (order_id),
    status_code  integer     NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
