-- The current parcels, one row per key (commune, map sheet, parcel number).
-- `id` identifies this version of the parcel; the key identifies the parcel across versions.
CREATE TABLE IF NOT EXISTS land.parcel (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    commune_code     text NOT NULL CHECK (commune_code ~ '^[0-9]{5}$'),
    sheet_no         integer NOT NULL CHECK (sheet_no > 0),
    parcel_no        integer NOT NULL CHECK (parcel_no > 0),
    land_use_codes   text[] NOT NULL DEFAULT '{}',
    declared_area_m2 numeric(14, 1),
    legal_area_m2    numeric(14, 1),
    area_m2          numeric(14, 1) GENERATED ALWAYS AS (round(ST_Area(geom)::numeric, 1)) STORED,
    owner_name       text,
    address          text,
    attributes       jsonb NOT NULL DEFAULT '{}',
    batch_id         bigint NOT NULL REFERENCES land.batch (id),
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    geom             geometry(MultiPolygon, 9218) NOT NULL,
    CONSTRAINT parcel_key UNIQUE (commune_code, sheet_no, parcel_no)
);
CREATE INDEX IF NOT EXISTS parcel_geom_idx ON land.parcel USING gist (geom);
CREATE INDEX IF NOT EXISTS parcel_batch_idx ON land.parcel (batch_id);
CREATE INDEX IF NOT EXISTS parcel_owner_idx ON land.parcel (lower(owner_name));
COMMENT ON TABLE land.parcel IS 'Current parcels (thửa đất); area_m2 is computed on the VN-2000 / TM-3 plane, rounded to 0.1 m²';
