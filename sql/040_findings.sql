-- Every finding of validation, and every record that was not loaded, kept as delivered.

CREATE TABLE IF NOT EXISTS land.finding (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id     bigint NOT NULL REFERENCES land.batch (id) ON DELETE CASCADE,
    rule_code    text NOT NULL REFERENCES land.rule (code),
    severity     text NOT NULL CHECK (severity IN ('reject', 'block', 'warn')),
    commune_code text,
    sheet_no     integer,
    parcel_no    integer,
    source_row   integer,
    message      text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}',
    location     geometry(Geometry, 9218)
);
CREATE INDEX IF NOT EXISTS finding_batch_idx ON land.finding (batch_id);
CREATE INDEX IF NOT EXISTS finding_key_idx ON land.finding (commune_code, sheet_no, parcel_no);
CREATE INDEX IF NOT EXISTS finding_location_idx ON land.finding USING gist (location);
COMMENT ON TABLE land.finding IS 'Validation findings: rule, severity, parcel key, source row, message and a location to open in QGIS';

CREATE TABLE IF NOT EXISTS land.rejected_record (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id     bigint NOT NULL REFERENCES land.batch (id) ON DELETE CASCADE,
    source_row   integer NOT NULL,
    rule_codes   text[] NOT NULL CHECK (cardinality(rule_codes) > 0),
    commune_code text,
    sheet_no     integer,
    parcel_no    integer,
    attributes   jsonb NOT NULL,
    geom         geometry(Geometry, 9218)
);
CREATE INDEX IF NOT EXISTS rejected_record_batch_idx ON land.rejected_record (batch_id);
COMMENT ON TABLE land.rejected_record IS 'Records not loaded: the attributes as delivered (original field names) and the geometry as delivered, reprojected to EPSG:9218';
