-- Issue 4: a shipment waits for its order's confirmation, then a handling delay (or a
-- manual dispatch), and leaves with a tracking number; or it is cancelled.
ALTER TABLE shipments
    ADD COLUMN correlation_id  uuid,
    ADD COLUMN ready_event_id  uuid,
    ADD COLUMN dispatch_after  timestamptz,
    ADD COLUMN dispatched_at   timestamptz,
    ADD COLUMN tracking_number text UNIQUE,
    ADD COLUMN cancel_reason   text,
    ADD COLUMN updated_at      timestamptz NOT NULL DEFAULT now();
ALTER TABLE shipments ADD CONSTRAINT shipments_status
    CHECK (status IN ('preparing', 'ready', 'dispatched', 'cancelled'));
CREATE INDEX shipments_due ON shipments (dispatch_after) WHERE status = 'ready';
