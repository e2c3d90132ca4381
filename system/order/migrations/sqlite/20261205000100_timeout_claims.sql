-- A timeout pass claims the due sagas it works on, so instances do not all time out the same
-- ones (store::claim_due_sagas); any change of the saga clears the claim.
ALTER TABLE sagas ADD COLUMN timeout_claimed_until_ms INTEGER;
-- Pruning (store::prune_idempotency_keys) finds old keys by time.
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at_ms);
