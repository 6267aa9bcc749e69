-- GET /shipments pages newest first by (created_at, shipment_id): each page is an index range.
CREATE INDEX shipments_newest_first ON shipments (created_at DESC, shipment_id DESC);
