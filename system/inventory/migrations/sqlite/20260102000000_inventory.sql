-- The catalog and its stock. `received` counts every unit that ever came in (seeding and
-- restocks), so conservation is a row-local check the database enforces on every write.
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    unit_price_minor INTEGER NOT NULL CHECK (unit_price_minor >= 0),
    available INTEGER NOT NULL CHECK (available >= 0),
    reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0),
    received INTEGER NOT NULL CHECK (received >= 0),
    updated_at_ms INTEGER NOT NULL,
    CHECK (received = available + reserved + sold)
);

-- One row per order the saga asked about; its status is the outcome every repeated command
-- re-announces. RELEASED without lines is a tombstone: a release that came before the reserve.
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED', 'COMMITTED')),
    reason TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- What a reservation holds, priced when it was made. Rejected reservations hold nothing.
CREATE TABLE IF NOT EXISTS reservation_lines (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    sku TEXT NOT NULL REFERENCES products (sku),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_minor INTEGER NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, sku)
);
