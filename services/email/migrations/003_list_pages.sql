-- GET /emails pages newest first by (sent_at, email_id): each page is an index range.
CREATE INDEX emails_newest_first ON emails (sent_at DESC, email_id DESC);
