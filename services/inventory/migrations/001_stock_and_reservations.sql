CREATE TABLE stock (
    sku        text        PRIMARY KEY,
    available  integer     NOT NULL CHECK (available >= 0),
    reserved   integer     NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservations (
    order_id       uuid        PRIMARY KEY,
    status         text        NOT NULL CHECK (status IN ('reserved', 'rejected')),
    lines          jsonb       NOT NULL,
    rejected_lines jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);
