-- A version edited in the database (a technician's correction in QGIS or psql) no longer has
-- the content its stored content_hash says, nor is it what its delivered record made: forget
-- both hashes, so that the next delivery of the parcel is compared with what the register now
-- holds (land.parcel_content_hash stands in for a missing content hash; a missing record hash
-- matches no record). An UPDATE that sets a hash itself keeps that one; the loader's own
-- UPDATEs (closing versions, renewing hashes) touch none of the content columns.
CREATE OR REPLACE FUNCTION land.forget_content_hash() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.content_hash IS NOT DISTINCT FROM OLD.content_hash THEN
        NEW.content_hash := NULL;
    END IF;
    IF NEW.record_hash IS NOT DISTINCT FROM OLD.record_hash THEN
        NEW.record_hash := NULL;
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS parcel_version_content_edited ON land.parcel_version;
CREATE TRIGGER parcel_version_content_edited
    BEFORE UPDATE OF geom, land_use_codes, declared_area_m2, legal_area_m2, owner_name, address
    ON land.parcel_version
    FOR EACH ROW
    EXECUTE FUNCTION land.forget_content_hash();
-- Registers upgraded while the record hash had a trigger of its own.
DROP TRIGGER IF EXISTS parcel_version_record_edited ON land.parcel_version;
DROP FUNCTION IF EXISTS land.forget_record_hash();

-- Transactions that wrote land.parcel_version other than through a load (a technician's edit
-- in QGIS or psql, a script): a load that looked at the register before one of them committed
-- reads the current versions again instead of using what it saw (register.still_current),
-- as it does after another batch. Loads mark their own writes with landpipe.loading.
CREATE TABLE IF NOT EXISTS land.register_edit (
    xact xid8 PRIMARY KEY,
    at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE land.register_edit IS 'Transactions that wrote land.parcel_version outside a load (hand edits), one row each';
-- SECURITY DEFINER: an editor's role needs no right on land.register_edit to edit parcels.
CREATE OR REPLACE FUNCTION land.note_register_edit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('landpipe.loading', true) IS DISTINCT FROM 'on' THEN
        INSERT INTO land.register_edit (xact) VALUES (pg_current_xact_id())
        ON CONFLICT (xact) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS parcel_version_written ON land.parcel_version;
CREATE TRIGGER parcel_version_written
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON land.parcel_version
    FOR EACH STATEMENT
    EXECUTE FUNCTION land.note_register_edit();

-- A version a certificate was issued on is what that certificate certifies: its geometry,
-- land use, areas, owner and address are not edited in place (the certificate would then
-- certify what it never did, and the register would keep no trace of what it did). A
-- correction of a certified parcel comes as a delivery: a new version, flagged for review
-- (CERT_CHANGED), the certified one kept.
-- SECURITY DEFINER: an editor's role needs no right on land.certificate to edit parcels.
CREATE OR REPLACE FUNCTION land.certificate_on_version(version_id bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.serial FROM land.certificate c WHERE c.parcel_version_id = version_id
    ORDER BY c.serial LIMIT 1
$$;
-- (PostGIS's operators are found where PostGIS was when the register was upgraded, whatever
-- the search path of the session editing.)
CREATE OR REPLACE FUNCTION land.refuse_certified_edit() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    serial text;
BEGIN
    IF (NEW.geom, NEW.land_use_codes, NEW.declared_area_m2, NEW.legal_area_m2, NEW.owner_name,
        NEW.address) IS NOT DISTINCT FROM (OLD.geom, OLD.land_use_codes, OLD.declared_area_m2,
        OLD.legal_area_m2, OLD.owner_name, OLD.address) THEN
        RETURN NEW;
    END IF;
    serial := land.certificate_on_version(OLD.id);
    IF serial IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'restrict_violation',
            MESSAGE = 'parcel ' || OLD.commune_code || '/' || OLD.sheet_no || '/'
                || OLD.parcel_no || ': version ' || OLD.id || ' holds certificate ' || serial
                || ', which certifies it as it is; it is not edited in place',
            HINT = 'deliver the correction: a new version, flagged for review (CERT_CHANGED)';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS parcel_version_certified_edit ON land.parcel_version;
CREATE TRIGGER parcel_version_certified_edit
    BEFORE UPDATE OF geom, land_use_codes, declared_area_m2, legal_area_m2, owner_name, address
    ON land.parcel_version
    FOR EACH ROW
    EXECUTE FUNCTION land.refuse_certified_edit();
