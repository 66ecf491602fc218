-- Revalidations: the rule catalogue re-run over the current parcels of a commune, without
-- reloading them (`landpipe revalidate`, flow `revalidate`).
--
-- A revalidation is a batch of kind 'revalidation' and status 'revalidated': one row per
-- commune per run, with the commune, the parcels checked (n_read) and the findings it
-- superseded (n_closed). Its findings are ordinary rows of land.finding. Every earlier finding
-- of the commune of a rule the revalidation re-ran is closed by it (closed_by_batch_id), so that
-- the views count only findings in force. Findings it cannot re-derive stay as they were: those
-- made while reading a delivery (ATTR_ENCODING, LINE_*), the record of a repair
-- (GEOM_REPAIRED) and CERT_CHANGED, which waits for a person's review.

ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'delivery';
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS n_closed integer NOT NULL DEFAULT 0;
-- A revalidation reads no file.
ALTER TABLE land.batch ALTER COLUMN source_path DROP NOT NULL;
ALTER TABLE land.batch ALTER COLUMN source_sha256 DROP NOT NULL;
COMMENT ON COLUMN land.batch.kind IS 'delivery (a survey delivery processed), revalidation (the rule catalogue re-run over the current parcels of commune_code) or review (a person closed the CERT_CHANGED findings of a parcel of commune_code)';
COMMENT ON COLUMN land.batch.n_closed IS 'Findings of earlier batches this batch closed (superseded): by a revalidation, by a delivery that changed or retired their parcels, or by a review (CERT_CHANGED only)';

-- The checks of kind and status are sql/140_reviews.sql's, which knows every kind.

-- The batch (a later revalidation or re-delivery) that closed a finding; NULL while in force.
ALTER TABLE land.finding ADD COLUMN IF NOT EXISTS closed_by_batch_id bigint
    REFERENCES land.batch (id) ON DELETE SET NULL;
COMMENT ON COLUMN land.finding.closed_by_batch_id IS 'The batch that superseded this finding (a revalidation, a delivery that checked its parcels again, or the review that closed a CERT_CHANGED); NULL while it is in force';
CREATE INDEX IF NOT EXISTS finding_in_force_key_idx
    ON land.finding (commune_code, sheet_no, parcel_no) WHERE closed_by_batch_id IS NULL;
CREATE INDEX IF NOT EXISTS finding_in_force_other_key_idx
    ON land.finding (other_commune_code, other_sheet_no, other_parcel_no)
    WHERE closed_by_batch_id IS NULL AND other_parcel_no IS NOT NULL;
