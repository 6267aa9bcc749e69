CREATE TABLE shipments (
    shipment_id      uuid        PRIMARY KEY,
    order_id         uuid        NOT NULL UNIQUE,
    status           text        NOT NULL,
    shipping_address jsonb       NOT NULL,
    lines            jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
