-- Delivered records that were not loaded and still stand for a parcel the register lacks. A
-- certificate's diagram names every neighbouring parcel: next to such a record it cannot, so
-- a parcel next to one is not ready for a certificate (land.parcel_ready) until the record's
-- parcel is loaded.

CREATE INDEX IF NOT EXISTS rejected_record_geom_idx ON land.rejected_record USING gist (geom);

-- A rejected record (land.rejected_record) with a geometry stands for a missing parcel until
-- a current parcel lies at its place (loaded since, or the version the record would have
-- replaced), a later batch rejects a record at its place again (that one stands instead), or a
-- later batch delivers its map sheet anew without it (the sheet of its commune as delivered,
-- or of its batch's commune: a record rejected for a wrong commune code lies in that one).
-- Its place is a point on its surface (of the geometry made valid: a record rejected for an
-- invalid geometry has one too). A record with no sheet number stands until its place is
-- taken or rejected again; one whose geometry lies outside the province (GEOM_OUT_OF_EXTENT)
-- stands for nothing anywhere.
CREATE OR REPLACE VIEW land.unloaded_record AS
SELECT r.id, r.batch_id, r.source_row, r.rule_codes, r.commune_code, r.sheet_no, r.parcel_no,
       r.attributes, r.geom
FROM land.rejected_record r
JOIN land.batch rb ON rb.id = r.batch_id
CROSS JOIN LATERAL (
    SELECT ST_PointOnSurface(ST_MakeValid(r.geom)) AS place
) p
WHERE r.geom IS NOT NULL AND NOT ST_IsEmpty(r.geom)
  AND NOT 'GEOM_OUT_OF_EXTENT' = ANY (r.rule_codes)
  AND NOT EXISTS (SELECT FROM land.parcel_version v
                  WHERE v.valid_to IS NULL AND v.geom && p.place AND ST_Intersects(v.geom, p.place))
  AND NOT EXISTS (SELECT FROM land.rejected_record later
                  WHERE later.batch_id > r.batch_id AND later.geom && p.place
                    AND ST_Intersects(ST_MakeValid(later.geom), p.place))
  AND NOT EXISTS (SELECT FROM land.batch b
                  WHERE b.id > r.batch_id AND b.status = 'loaded'
                    AND r.sheet_no IS NOT NULL
                    AND (b.covered_sheets @> jsonb_build_array(jsonb_build_array(r.commune_code, r.sheet_no))
                         OR b.covered_sheets @> jsonb_build_array(jsonb_build_array(rb.commune_code, r.sheet_no))));
COMMENT ON VIEW land.unloaded_record IS 'Rejected records that still stand for a parcel the register lacks: no current parcel at their place, not rejected again there by a later batch, their sheet not delivered anew since';

-- Current parcels and the unloaded records (land.unloaded_record) they share more than 5 cm
-- of boundary with, as land.parcel_neighbours measures it (at its default tolerance): the
-- neighbours their diagrams cannot name from the register.
CREATE OR REPLACE VIEW land.unloaded_neighbour AS
SELECT v.id AS version_id, v.commune_code, v.sheet_no, v.parcel_no,
       u.id AS rejected_record_id, u.batch_id, u.source_row,
       round(shared.length::numeric, 2) AS shared_m
FROM land.unloaded_record u
JOIN land.parcel_version v
  ON v.valid_to IS NULL AND v.geom && ST_Expand(u.geom, 0.05) AND ST_DWithin(v.geom, u.geom, 0.05)
CROSS JOIN LATERAL (
    SELECT land.shared_boundary_m(v.geom, ST_MakeValid(u.geom), 0.05) AS length
) shared
WHERE shared.length > 0.05;
COMMENT ON VIEW land.unloaded_neighbour IS 'Current parcels next to a delivered record that was not loaded (land.unloaded_record): not ready for a certificate until it is';

-- The unloaded records (land.unloaded_record) sharing a stretch of boundary with a current
-- parcel, longer than tolerance_m, as land.parcel_neighbours measures it: neighbours its
-- diagram cannot name from the register.
DROP FUNCTION IF EXISTS land.unloaded_neighbours(text, integer, integer, double precision);
CREATE FUNCTION land.unloaded_neighbours(commune text, sheet integer, parcel integer,
                                         tolerance_m double precision DEFAULT 0.05)
RETURNS TABLE (batch_id bigint, source_row integer, rule_codes text[], commune_code text,
               sheet_no integer, parcel_no integer, shared_m numeric)
LANGUAGE sql STABLE SET search_path FROM CURRENT SET jit = off AS $$
    SELECT u.batch_id, u.source_row, u.rule_codes, u.commune_code, u.sheet_no, u.parcel_no,
           round(shared.length::numeric, 2)
    FROM land.parcel_version p
    JOIN land.unloaded_record u ON u.geom && ST_Expand(p.geom, tolerance_m)
    CROSS JOIN LATERAL (
        SELECT land.shared_boundary_m(p.geom, ST_MakeValid(u.geom), tolerance_m) AS length
    ) shared
    WHERE p.commune_code = commune AND p.sheet_no = sheet AND p.parcel_no = parcel
      AND p.valid_to IS NULL AND ST_DWithin(p.geom, u.geom, tolerance_m)
      AND shared.length > tolerance_m
    ORDER BY shared.length DESC, u.batch_id, u.source_row
$$;
COMMENT ON FUNCTION land.unloaded_neighbours(text, integer, integer, double precision) IS 'Delivered records not loaded (land.unloaded_record) that share a stretch of boundary with a current parcel: SELECT * FROM land.unloaded_neighbours(''22924'', 1, 7)';

-- A certificate is on a version of the parcel it names.
CREATE OR REPLACE FUNCTION land.check_certificate_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM land.parcel_version v
                   WHERE v.id = NEW.parcel_version_id
                     AND (v.commune_code, v.sheet_no, v.parcel_no)
                         = (NEW.commune_code, NEW.sheet_no, NEW.parcel_no)) THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
            MESSAGE = 'certificate ' || NEW.serial || ': parcel version '
                      || coalesce(NEW.parcel_version_id::text, 'NULL')
                      || ' is not a version of parcel ' || NEW.commune_code || '/'
                      || NEW.sheet_no || '/' || NEW.parcel_no;
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS certificate_version ON land.certificate;
CREATE TRIGGER certificate_version
    BEFORE INSERT OR UPDATE OF commune_code, sheet_no, parcel_no, parcel_version_id
    ON land.certificate
    FOR EACH ROW
    EXECUTE FUNCTION land.check_certificate_version();
