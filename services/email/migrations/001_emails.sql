CREATE TABLE emails (
    email_id   uuid        PRIMARY KEY,
    order_id   uuid        NOT NULL,
    recipient  text        NOT NULL,
    subject    text        NOT NULL,
    kind       text        NOT NULL,
    status     text        NOT NULL,
    message_id text        NOT NULL UNIQUE,
    sent_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX emails_by_order ON emails (order_id);
