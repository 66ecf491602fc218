-- Views for district land offices, notebooks and QGIS.

-- Per batch: what was read, loaded, repaired and rejected, how the register changed, and the
-- findings per rule it made (closed ones included); for a revalidation or a review (kind), the
-- findings it closed (n_closed), and for a review who made it and what they found.
CREATE OR REPLACE VIEW land.batch_summary AS
SELECT b.id AS batch_id, b.source_path, b.commune_code, b.status, b.started_at, b.finished_at,
       b.n_read, b.n_loaded, b.n_repaired, b.n_rejected,
       b.n_added, b.n_changed, b.n_unchanged, b.n_retired,
       coalesce((SELECT jsonb_object_agg(f.rule_code, f.n ORDER BY f.rule_code)
                 FROM (SELECT rule_code, count(*) AS n FROM land.finding
                       WHERE batch_id = b.id GROUP BY rule_code) f), '{}'::jsonb) AS findings,
       b.kind, b.n_closed, b.reviewed_by, b.note
FROM land.batch b;

-- Current parcels with their commune, district and whether an open `block` finding holds them:
-- one made on this version of the parcel or later and not closed by a later revalidation,
-- naming it as the parcel or as the other parcel of a pair (an overlap with a later delivery
-- blocks the registered parcel too). A `reject` finding that a revalidation made blocks too:
-- it concerns the registered parcel itself, which a revalidation never removes.
CREATE OR REPLACE VIEW land.parcel_detail AS
SELECT p.*, c.name AS commune_name, d.code AS district_code, d.name AS district_name,
       EXISTS (SELECT 1 FROM land.finding f
               WHERE f.closed_by_batch_id IS NULL AND f.batch_id >= p.batch_id
                 AND (f.severity = 'block'
                      OR (f.severity = 'reject'
                          AND EXISTS (SELECT 1 FROM land.batch b
                                      WHERE b.id = f.batch_id AND b.kind = 'revalidation')))
                 AND ((f.commune_code, f.sheet_no, f.parcel_no)
                          = (p.commune_code, p.sheet_no, p.parcel_no)
                      OR (f.other_commune_code, f.other_sheet_no, f.other_parcel_no)
                          = (p.commune_code, p.sheet_no, p.parcel_no))
       ) AS blocked
FROM land.parcel p
LEFT JOIN land.admin_unit c ON c.code = p.commune_code
LEFT JOIN land.admin_unit d ON d.code = c.parent_code;

-- Parcels ready for a certificate: current, no open `block` finding, land-use codes all known,
-- an owner, no certificate issued on this version yet, and every neighbour in the register: none
-- is a delivered record that was not loaded (land.unloaded_neighbours, at the 5 cm tolerance of
-- land.parcel_neighbours), which the diagram could not name. (A parcel with a certificate
-- whose data changed carries a CERT_CHANGED block finding until reviewed, so it is not ready.)
CREATE OR REPLACE VIEW land.parcel_ready AS
SELECT d.*
FROM land.parcel_detail d
WHERE NOT d.blocked
  AND d.owner_name ~ '[[:alpha:]]'  -- a name: '-' or '?' typed for one that is not known is none
  AND cardinality(d.land_use_codes) > 0
  AND NOT EXISTS (SELECT 1 FROM unnest(d.land_use_codes) AS code
                  WHERE code NOT IN (SELECT u.code FROM land.land_use_code u))
  AND NOT EXISTS (SELECT 1 FROM land.certificate c
                  WHERE (c.commune_code, c.sheet_no, c.parcel_no)
                        = (d.commune_code, d.sheet_no, d.parcel_no)
                    AND c.parcel_version_id = d.id)
  -- (Found from the few unloaded records, once: not one search per parcel.)
  AND d.id NOT IN (SELECT n.version_id FROM land.unloaded_neighbour n);
COMMENT ON VIEW land.parcel_ready IS 'Current parcels the data can stand behind and no certificate was issued on: no open block finding, known land use, an owner (a name with a letter), no neighbouring delivered record left unloaded';

-- The findings in force on a current parcel, as land.parcel_detail.blocked counts them: made
-- on this version or later, not closed, naming the parcel as itself or as the other parcel
-- of a pair (an overlap is kept under the first parcel of the two). `blocks`: whether it
-- holds the parcel from a certificate; `rejected_record`: whether the finding's delivered
-- record was rejected (not this parcel, kept in land.rejected_record).
CREATE OR REPLACE FUNCTION land.parcel_findings(commune text, sheet integer, parcel integer)
RETURNS TABLE (rule_code text, severity text, message text, batch_id bigint, blocks boolean,
               rejected_record boolean)
LANGUAGE sql STABLE AS $$
    SELECT f.rule_code, f.severity, f.message, f.batch_id,
           f.severity = 'block'
           OR (f.severity = 'reject'
               AND EXISTS (SELECT 1 FROM land.batch b
                           WHERE b.id = f.batch_id AND b.kind = 'revalidation')),
           f.source_row IS NOT NULL
           AND EXISTS (SELECT FROM land.rejected_record r
                       WHERE r.batch_id = f.batch_id AND r.source_row = f.source_row)
    FROM land.parcel p
    JOIN land.finding f
      ON f.closed_by_batch_id IS NULL AND f.batch_id >= p.batch_id
     AND ((f.commune_code, f.sheet_no, f.parcel_no) = (p.commune_code, p.sheet_no, p.parcel_no)
          OR (f.other_commune_code, f.other_sheet_no, f.other_parcel_no)
             = (p.commune_code, p.sheet_no, p.parcel_no))
    WHERE (p.commune_code, p.sheet_no, p.parcel_no) = (commune, sheet, parcel)
    ORDER BY CASE f.severity WHEN 'reject' THEN 0 WHEN 'block' THEN 1 ELSE 2 END, f.id
$$;
COMMENT ON FUNCTION land.parcel_findings(text, integer, integer) IS 'The findings in force on a current parcel, its own and those of pairs it is the other parcel of, blocking ones first: SELECT * FROM land.parcel_findings(''22924'', 3, 118)';
