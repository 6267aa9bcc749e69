-- GET /audit/orders pages oldest first by (created_at, order_id): each page is an index range.
CREATE INDEX orders_oldest_first ON orders (created_at, order_id);
