-- The W3C trace context of the request that started the saga, so work the saga starts later on
-- its own (a step timeout) continues the order's trace.
ALTER TABLE sagas ADD COLUMN traceparent TEXT;
