-- The trace context of the confirmation that made a shipment ready: the dispatcher's
-- timer-started dispatch starts a trace of its own, linked to it.
ALTER TABLE shipments ADD COLUMN ready_trace jsonb NOT NULL DEFAULT '{}'::jsonb;
