-- Parcels with their history: every version of every parcel, with the interval it was current.
-- A parcel is identified by its key (commune, map sheet, parcel number); `id` identifies one
-- version. A version is current while valid_to is NULL; a re-delivery that changes a parcel
-- closes its current version and adds a new one, and retires parcels the delivery no longer has.
CREATE TABLE IF NOT EXISTS land.parcel_version (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    commune_code        text NOT NULL CHECK (commune_code ~ '^[0-9]{5}$'),
    sheet_no            integer NOT NULL CHECK (sheet_no > 0),
    parcel_no           integer NOT NULL CHECK (parcel_no > 0),
    land_use_codes      text[] NOT NULL DEFAULT '{}',
    declared_area_m2    numeric(14, 1),
    legal_area_m2       numeric(14, 1),
    area_m2             numeric(14, 1) NOT NULL,
    owner_name          text,
    address             text,
    attributes          jsonb NOT NULL DEFAULT '{}',
    batch_id            bigint NOT NULL REFERENCES land.batch (id),
    retired_batch_id    bigint REFERENCES land.batch (id),
    valid_from          timestamptz NOT NULL,
    valid_to            timestamptz,
    change              text NOT NULL CHECK (change IN ('added', 'changed')),
    previous_version_id bigint REFERENCES land.parcel_version (id),
    geom                geometry(MultiPolygon, 9218) NOT NULL,
    content_hash        bytea,
    CHECK (valid_to IS NULL OR valid_to >= valid_from),
    CHECK ((valid_to IS NULL) = (retired_batch_id IS NULL))
);
CREATE INDEX IF NOT EXISTS parcel_version_key_idx
    ON land.parcel_version (commune_code, sheet_no, parcel_no, valid_from);
-- Where the current parcels are (land.parcel, the loads' neighbours): closing a version
-- then adds no entry to it, which made a re-delivery's closing of 10,000 versions take 0.7 s
-- instead of 0.2 s. A search by location among earlier versions scans them (look such a
-- version up by its key instead). Registers created before had one over every version.
CREATE INDEX IF NOT EXISTS parcel_version_current_geom_idx ON land.parcel_version
    USING gist (geom) WHERE valid_to IS NULL;
DROP INDEX IF EXISTS land.parcel_version_geom_idx;
CREATE INDEX IF NOT EXISTS parcel_version_batch_idx ON land.parcel_version (batch_id);
-- Owners are searched for by part of a name (a LIKE pattern that starts with a wildcard), which no b-tree
-- serves: a scan of the current parcels takes ~0.3 s per million. The b-tree on
-- lower(owner_name) that registers created before served no such search and cost every
-- initial load a second per million parcels to build.
DROP INDEX IF EXISTS land.parcel_version_owner_idx;
-- area_m2 is round(ST_Area(geom)::numeric, 1). A load computes it as it writes the version
-- (GEOS and PostGIS compute the same area of the same coordinates, and landpipe rounds as
-- PostgreSQL casts); every other write gets it from the trigger below. It was a generated
-- column: computing it in the server took 1.5 s of a million-parcel COPY's 5.
ALTER TABLE land.parcel_version ALTER COLUMN area_m2 DROP EXPRESSION IF EXISTS;
ALTER TABLE land.parcel_version ALTER COLUMN area_m2 SET NOT NULL;
-- (ST_Area is found where PostGIS was when the register was upgraded, whatever the search
-- path of the session writing: a data-only pg_restore sets an empty one.)
CREATE OR REPLACE FUNCTION land.parcel_version_area() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    NEW.area_m2 := round(ST_Area(NEW.geom)::numeric, 1);
    RETURN NEW;
END
$$;
-- A load writes no geometry nor area of a version once it is written (it closes versions and
-- renews hashes): every UPDATE of either is computed again, whoever makes it. An INSERT is
-- computed unless a load made it with its area.
DROP TRIGGER IF EXISTS parcel_version_area ON land.parcel_version;
CREATE TRIGGER parcel_version_area
    BEFORE INSERT ON land.parcel_version
    FOR EACH ROW
    WHEN (NEW.area_m2 IS NULL OR current_setting('landpipe.loading', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION land.parcel_version_area();
DROP TRIGGER IF EXISTS parcel_version_area_edited ON land.parcel_version;
CREATE TRIGGER parcel_version_area_edited
    BEFORE UPDATE OF geom, area_m2 ON land.parcel_version
    FOR EACH ROW
    EXECUTE FUNCTION land.parcel_version_area();
COMMENT ON TABLE land.parcel_version IS 'Every version of every parcel (thửa đất) with the interval it was current; area_m2 computed on the VN-2000 / TM-3 plane, rounded to 0.1 m²';
COMMENT ON COLUMN land.parcel_version.area_m2 IS 'round(ST_Area(geom)::numeric, 1): the area on the VN-2000 / TM-3 plane in m², computed by the loader or by the triggers parcel_version_area and parcel_version_area_edited';
-- Registers created before versions carried their content hash.
ALTER TABLE land.parcel_version ADD COLUMN IF NOT EXISTS content_hash bytea;
COMMENT ON COLUMN land.parcel_version.content_hash IS 'land.parcel_content_hash of the version, where the loader stored it (later loads do; a first load leaves it to the function): a re-delivered parcel with the same content is unchanged';
-- Registers created before versions carried the hash of the record they were loaded from.
ALTER TABLE land.parcel_version ADD COLUMN IF NOT EXISTS record_hash bytea;
-- One current version per key. It carries the version and its record hash, so that a load
-- reads what the register holds of a delivery's sheets from the index alone (0.4 s instead
-- of 0.8 s for a million parcels); registers created before had it without them, by the name
-- parcel_version_current_key.
CREATE UNIQUE INDEX IF NOT EXISTS parcel_version_current
    ON land.parcel_version (commune_code, sheet_no, parcel_no) INCLUDE (id, record_hash)
    WHERE valid_to IS NULL;
DROP INDEX IF EXISTS land.parcel_version_current_key;
COMMENT ON COLUMN land.parcel_version.record_hash IS 'Hash of the delivered record the version was made of, keyed by how it was read (landpipe.sources.records): a re-delivered record with the same hash makes the same parcel';

-- A value with its length before it (4 bytes, big-endian; -1 for NULL), so that values
-- concatenate without ambiguity.
CREATE OR REPLACE FUNCTION land.length_prefixed(value bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN int4send(-1) ELSE int4send(length(value)) || value END
$$;

-- Land-use codes as land.parcel_content_hash frames them: how many (4 bytes), then each
-- length-prefixed. A loop over a parcel's few codes costs less than a subquery per call,
-- which also kept the function below from being inlined into the queries calling it.
CREATE OR REPLACE FUNCTION land.codes_framed(codes text[])
RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    framed bytea := int4send(coalesce(cardinality(codes), 0));
    code text;
BEGIN
    IF codes IS NOT NULL THEN
        FOREACH code IN ARRAY codes LOOP
            framed := framed || land.length_prefixed(convert_to(code, 'UTF8'));
        END LOOP;
    END IF;
    RETURN framed;
END
$$;

-- SHA-256 of what makes a re-delivered parcel changed: its geometry (WKB, little-endian),
-- land-use codes, declared and legal areas (in tenths of m²), owner and address, each
-- length-prefixed. The loader computes the same bytes from a delivery
-- (landpipe.sources.fields.content_hashes) and stores them as content_hash; this function
-- is their definition, and stands in for a version stored without one. It is declared
-- STABLE, as convert_to is, so that the planner inlines it into the query calling it: declared
-- IMMUTABLE it was called row by row, which took 0.65 s for a re-delivery's 10,000 changed
-- parcels instead of 0.25 s.
CREATE OR REPLACE FUNCTION land.parcel_content_hash(
    geom geometry, land_use_codes text[], declared_area_m2 numeric, legal_area_m2 numeric,
    owner_name text, address text)
RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256(
        land.length_prefixed(ST_AsBinary(geom, 'NDR'))
        || land.codes_framed(land_use_codes)
        || CASE WHEN declared_area_m2 IS NULL THEN int4send(-1)
                ELSE int4send(8) || int8send((declared_area_m2 * 10)::int8) END
        || CASE WHEN legal_area_m2 IS NULL THEN int4send(-1)
                ELSE int4send(8) || int8send((legal_area_m2 * 10)::int8) END
        || land.length_prefixed(convert_to(owner_name, 'UTF8'))
        || land.length_prefixed(convert_to(address, 'UTF8')))
$$;

-- The current parcels: one row per key, the columns district offices, notebooks and QGIS use.
CREATE OR REPLACE VIEW land.parcel AS
SELECT id, commune_code, sheet_no, parcel_no, land_use_codes, declared_area_m2, legal_area_m2,
       area_m2, owner_name, address, attributes, batch_id, valid_from AS loaded_at, geom
FROM land.parcel_version
WHERE valid_to IS NULL;
COMMENT ON VIEW land.parcel IS 'Current parcels (thửa đất), one row per key (commune_code, sheet_no, parcel_no)';

-- The parcels of a commune as they were at a moment: every version current at `at`.
CREATE OR REPLACE FUNCTION land.parcels_at(commune text, at timestamptz)
RETURNS SETOF land.parcel_version
LANGUAGE sql STABLE AS $$
    SELECT * FROM land.parcel_version
    WHERE commune_code = commune AND valid_from <= at AND (valid_to IS NULL OR valid_to > at)
$$;
COMMENT ON FUNCTION land.parcels_at(text, timestamptz) IS 'The parcels of a commune as they were at a moment: SELECT * FROM land.parcels_at(''22924'', ''2026-01-01'')';

-- Lineage: which parcels a parcel came from when parcels were split or merged.
CREATE TABLE IF NOT EXISTS land.parcel_lineage (
    parent_version_id bigint NOT NULL REFERENCES land.parcel_version (id),
    child_version_id  bigint NOT NULL REFERENCES land.parcel_version (id),
    batch_id          bigint NOT NULL REFERENCES land.batch (id),
    shared_area_m2    numeric(14, 1) NOT NULL,
    PRIMARY KEY (parent_version_id, child_version_id)
);
CREATE INDEX IF NOT EXISTS parcel_lineage_child_idx ON land.parcel_lineage (child_version_id);
COMMENT ON TABLE land.parcel_lineage IS 'Split and merge lineage: a retired parcel version (parent) and the new versions that cover its area (children)';

-- The ancestry of a parcel: every earlier version of it (from before it was retired, for a key
-- added again) and, through splits and merges, of the parcels it came from, nearest first;
-- of a key retired since, from its last version on.
CREATE OR REPLACE FUNCTION land.parcel_ancestry(commune text, sheet integer, parcel integer)
RETURNS TABLE (generation integer, version_id bigint, commune_code text, sheet_no integer,
               parcel_no integer, valid_from timestamptz, valid_to timestamptz, how text)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE ancestry (generation, version_id, how) AS (
        -- The current version; for a key retired since, its last version.
        SELECT 0, l.id, CASE WHEN l.valid_to IS NULL THEN 'current' ELSE 'retired' END
        FROM (SELECT v.id, v.valid_to FROM land.parcel_version v
              WHERE v.commune_code = commune AND v.sheet_no = sheet AND v.parcel_no = parcel
              ORDER BY v.valid_to DESC NULLS FIRST, v.id DESC LIMIT 1) l
        UNION
        SELECT a.generation + 1, p.id, p.how
        FROM ancestry a
        JOIN LATERAL (
            SELECT v.previous_version_id AS id, 'earlier version'::text AS how
            FROM land.parcel_version v WHERE v.id = a.version_id AND v.previous_version_id IS NOT NULL
            UNION ALL
            -- A key retired, then added again: its last version before it came back.
            SELECT e.id, 'earlier version, retired'
            FROM land.parcel_version v
            JOIN LATERAL (
                SELECT w.id FROM land.parcel_version w
                WHERE w.commune_code = v.commune_code AND w.sheet_no = v.sheet_no
                  AND w.parcel_no = v.parcel_no AND w.valid_to <= v.valid_from
                ORDER BY w.valid_to DESC, w.id DESC LIMIT 1
            ) e ON true
            WHERE v.id = a.version_id AND v.previous_version_id IS NULL
            UNION ALL
            SELECT l.parent_version_id, 'split/merge'
            FROM land.parcel_lineage l WHERE l.child_version_id = a.version_id
        ) p ON true
    )
    SELECT a.generation, v.id, v.commune_code, v.sheet_no, v.parcel_no, v.valid_from,
           v.valid_to, a.how
    FROM ancestry a JOIN land.parcel_version v ON v.id = a.version_id
    ORDER BY a.generation, v.id
$$;
