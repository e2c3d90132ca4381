-- Transactional outbox: rows written in the same transaction as the state change they announce.
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    msg_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    traceparent TEXT,
    created_at_ms INTEGER NOT NULL,
    claimed_by TEXT,
    claimed_until_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    published_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE published_at_ms IS NULL;

-- Inbox: ids of messages a consumer has processed, so a redelivery changes nothing.
CREATE TABLE IF NOT EXISTS inbox (
    consumer TEXT NOT NULL,
    message_id TEXT NOT NULL,
    processed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
