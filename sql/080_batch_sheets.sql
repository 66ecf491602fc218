-- The map sheets a delivery covered: what a re-delivery compared, and what its report draws.

-- (commune_code, sheet_no) pairs as a JSON array of [commune, sheet]; NULL for batches that
-- read no parcels (refusals, revalidations) and for batches loaded before this column.
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS covered_sheets jsonb;
COMMENT ON COLUMN land.batch.covered_sheets IS 'Map sheets the delivery''s records named, as [[commune_code, sheet_no], ...]: parcels absent from it were retired in those where it had an accepted record';
