-- The transaction that wrote each batch, so that a load can tell whether any batch touching
-- its communes committed after it looked at the register (pg_visible_in_snapshot), and
-- otherwise use what it saw instead of reading the current versions again.
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS xact xid8 NOT NULL DEFAULT pg_current_xact_id();
COMMENT ON COLUMN land.batch.xact IS 'Transaction that wrote the batch (pg_current_xact_id())';
