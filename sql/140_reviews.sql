-- Reviews of certified parcels that a delivery changed (`landpipe review`).
--
-- A delivery that changes, retires or adds again a parcel holding a certificate makes a
-- CERT_CHANGED block finding on it (landpipe.register._flag_certificates): no later load or
-- revalidation closes it, only a person who compared the new data with the certificate. A
-- review is a batch of kind 'review' and status 'reviewed', with the commune, who reviewed
-- (reviewed_by) and what they found (note); it closes the parcel's CERT_CHANGED findings in
-- force (closed_by_batch_id, n_closed) and nothing else. It writes no parcel.

ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS reviewed_by text;
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS note text;
COMMENT ON COLUMN land.batch.reviewed_by IS 'Of a review: who compared the changed parcel with its certificate';
COMMENT ON COLUMN land.batch.note IS 'Of a review: what the reviewer found, as they wrote it';
COMMENT ON COLUMN land.batch.kind IS 'delivery (a survey delivery processed), revalidation (the rule catalogue re-run over the current parcels of commune_code) or review (a person closed the CERT_CHANGED findings of a parcel of commune_code)';

-- The checks of kind and status, replaced only when they lack the review (every file re-runs
-- on upgrade; 070_revalidation.sql leaves checks that exist as they are).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'land.batch'::regclass AND conname = 'batch_status_check'
                     AND position('reviewed' IN pg_get_constraintdef(oid)) > 0) THEN
        ALTER TABLE land.batch DROP CONSTRAINT IF EXISTS batch_status_check;
        ALTER TABLE land.batch ADD CONSTRAINT batch_status_check
            CHECK (status IN ('loaded', 'rejected', 'failed', 'revalidated', 'reviewed'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'land.batch'::regclass AND conname = 'batch_kind_check'
                     AND position('review' IN pg_get_constraintdef(oid)) > 0) THEN
        ALTER TABLE land.batch DROP CONSTRAINT IF EXISTS batch_kind_check;
        ALTER TABLE land.batch ADD CONSTRAINT batch_kind_check CHECK (
            (kind = 'delivery' AND status NOT IN ('revalidated', 'reviewed')
                AND source_path IS NOT NULL AND source_sha256 IS NOT NULL)
            OR (kind = 'revalidation' AND status = 'revalidated' AND commune_code IS NOT NULL)
            OR (kind = 'review' AND status = 'reviewed' AND commune_code IS NOT NULL
                AND reviewed_by IS NOT NULL AND note IS NOT NULL));
    END IF;
END
$$;

-- (After those of 020_batch.sql and 070_revalidation.sql, which every upgrade applies again.)
COMMENT ON TABLE land.batch IS 'Deliveries processed: loaded (parcels written), rejected (no parcel usable) or failed (the delivery could not be used as a whole); revalidations (kind revalidation) and reviews of certified parcels (kind review)';
COMMENT ON COLUMN land.batch.n_closed IS 'Findings of earlier batches this batch closed (superseded): by a revalidation, by a delivery that changed or retired their parcels, or by a review (CERT_CHANGED only)';
COMMENT ON COLUMN land.finding.closed_by_batch_id IS 'The batch that superseded this finding (a revalidation, a delivery that checked its parcels again, or the review that closed a CERT_CHANGED); NULL while it is in force';
