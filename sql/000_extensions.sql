-- PostGIS and the schema that holds the land register.
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE SCHEMA IF NOT EXISTS land;
COMMENT ON SCHEMA land IS 'landpipe land register: parcels, deliveries (batches), findings and reference data';

-- One row per SQL file applied by `landpipe db upgrade`, with its checksum.
CREATE TABLE IF NOT EXISTS land.migration (
    filename   text PRIMARY KEY,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
