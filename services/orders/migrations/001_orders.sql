CREATE TABLE orders (
    order_id         uuid          PRIMARY KEY,
    customer_email   text          NOT NULL,
    lines            jsonb         NOT NULL,
    total            numeric(14,2) NOT NULL,
    currency         char(3)       NOT NULL,
    shipping_address jsonb         NOT NULL,
    status           text          NOT NULL,
    correlation_id   uuid          NOT NULL,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    updated_at       timestamptz   NOT NULL DEFAULT now()
);

-- Every event about an order, as the orders service saw it: its timeline.
CREATE TABLE order_history (
    event_id    uuid        PRIMARY KEY,
    order_id    uuid        NOT NULL REFERENCES orders (order_id),
    event_type  text        NOT NULL,
    producer    text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_history_by_order ON order_history (order_id, occurred_at);
