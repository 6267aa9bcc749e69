-- Issue 4: what email knows of each order (from order.created), to write every later
-- email; and at most one email of each kind per order.
CREATE TABLE customer_orders (
    order_id         uuid          PRIMARY KEY,
    customer_name    text          NOT NULL,
    customer_email   text          NOT NULL,
    lines            jsonb         NOT NULL,
    total            numeric(14,2) NOT NULL,
    currency         char(3)       NOT NULL,
    shipping_address jsonb         NOT NULL,
    received_at      timestamptz   NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX emails_once_per_kind ON emails (order_id, kind);
