-- One row per delivery processed (a batch), refused deliveries included.
CREATE TABLE IF NOT EXISTS land.batch (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_path    text NOT NULL,
    source_sha256  text NOT NULL CHECK (source_sha256 ~ '^[0-9a-f]{64}$'),
    source_format  text,
    source_layer   text,
    commune_code   text,
    crs_read       text,
    crs_how        text CHECK (crs_how IN ('file', 'option', 'inferred')),
    field_mapping  jsonb NOT NULL DEFAULT '{}',
    options        jsonb NOT NULL DEFAULT '{}',
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    status         text NOT NULL CHECK (status IN ('loaded', 'rejected', 'failed')),
    error          text,
    n_read         integer NOT NULL DEFAULT 0,
    n_loaded       integer NOT NULL DEFAULT 0,
    n_repaired     integer NOT NULL DEFAULT 0,
    n_rejected     integer NOT NULL DEFAULT 0,
    n_added        integer NOT NULL DEFAULT 0,
    n_changed      integer NOT NULL DEFAULT 0,
    n_unchanged    integer NOT NULL DEFAULT 0,
    n_retired      integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batch_sha256_idx ON land.batch (source_sha256);
COMMENT ON TABLE land.batch IS 'Deliveries processed: loaded (parcels written), rejected (no parcel usable) or failed (the delivery could not be used as a whole); revalidations (kind revalidation) and reviews of certified parcels (kind review)';
