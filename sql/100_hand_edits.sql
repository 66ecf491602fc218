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
