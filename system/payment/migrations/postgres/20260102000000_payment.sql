-- Customer accounts: only the credit limit. What a customer owes lives in the ledger.
CREATE TABLE IF NOT EXISTS accounts (
    customer_id TEXT PRIMARY KEY,
    credit_limit_minor BIGINT NOT NULL CHECK (credit_limit_minor >= 0),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- The payment ledger, the source of truth: append-only (the trigger refuses UPDATE, DELETE and
-- TRUNCATE). `customer_id` is NULL only for a void that arrived before any authorization (the
-- command names no customer). Each order has at most one event of each kind, which the unique
-- key guards; it also serves lookups by order.
CREATE TABLE IF NOT EXISTS payment_events (
    seq BIGSERIAL PRIMARY KEY,
    customer_id TEXT,
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('AUTHORIZED', 'DECLINED', 'CAPTURED', 'VOIDED')),
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    reason TEXT,
    occurred_at_ms BIGINT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    UNIQUE (order_id, kind)
);

CREATE OR REPLACE FUNCTION payment_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'payment_events is append-only';
END;
$$;

CREATE TRIGGER payment_events_no_change BEFORE UPDATE OR DELETE ON payment_events
    FOR EACH ROW EXECUTE FUNCTION payment_events_append_only();
CREATE TRIGGER payment_events_no_truncate BEFORE TRUNCATE ON payment_events
    FOR EACH STATEMENT EXECUTE FUNCTION payment_events_append_only();

-- The projection of the ledger per customer, updated with every appended event and rebuildable
-- by replay. `last_seq` is the last event folded in.
CREATE TABLE IF NOT EXISTS account_balances (
    customer_id TEXT PRIMARY KEY,
    held_minor BIGINT NOT NULL CHECK (held_minor >= 0),
    captured_minor BIGINT NOT NULL CHECK (captured_minor >= 0),
    last_seq BIGINT NOT NULL
);
