-- Issue 4: a cancelled order's reservation is released; a shipped one's is fulfilled
-- (the units left the warehouse and are no longer counted as reserved).
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('reserved', 'rejected', 'released', 'fulfilled'));
ALTER TABLE reservations ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
