-- Pruning (outbox::prune, inbox::prune) finds old rows by time.
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at_ms) WHERE published_at_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbox_processed ON inbox (processed_at_ms);
