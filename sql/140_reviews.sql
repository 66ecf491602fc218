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

-- The checks of kind and status, for every kind (every file re-runs on upgrade): replaced only
-- when they lack the review (020_batch.sql's status check, or those that earlier versions of
-- 070_revalidation.sql made).
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
