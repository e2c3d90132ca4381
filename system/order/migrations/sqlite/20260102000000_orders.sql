-- The write model: one row per order, changed only by the POST handler and the saga.
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
    items TEXT NOT NULL,
    total_minor INTEGER,
    reason TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, created_at_ms);

-- The first response to each (customer, Idempotency-Key); the primary key decides races.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    customer_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    order_id TEXT NOT NULL,
    response_status INTEGER NOT NULL,
    response_body TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (customer_id, key)
);

-- The durable state of each order's saga. The flags record acknowledgements in COMPLETING
-- (commit, capture) and COMPENSATING (release, void); 0/1 because the Any driver has no booleans.
CREATE TABLE IF NOT EXISTS sagas (
    order_id TEXT PRIMARY KEY,
    step TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    deadline_at_ms INTEGER,
    last_error TEXT,
    stock_committed INTEGER NOT NULL DEFAULT 0,
    payment_captured INTEGER NOT NULL DEFAULT 0,
    stock_released INTEGER NOT NULL DEFAULT 0,
    void_requested INTEGER NOT NULL DEFAULT 0,
    payment_voided INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
-- The timeout pass scans only sagas that can still time out.
CREATE INDEX IF NOT EXISTS sagas_due ON sagas (deadline_at_ms) WHERE deadline_at_ms IS NOT NULL;

-- The CQRS read model, fed only by order.events.
CREATE TABLE IF NOT EXISTS order_view (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS order_view_by_customer ON order_view (customer_id, created_at_ms);
