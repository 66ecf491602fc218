-- Reference data, loaded from the data files in schemas/ by `landpipe db upgrade`.

-- Administrative units (QĐ 124/2004/QĐ-TTg codes): province, districts, communes.
-- Districts carry their boundary (administrative-map quality, metres to tens of metres).
CREATE TABLE IF NOT EXISTS land.admin_unit (
    code        text PRIMARY KEY CHECK (code ~ '^[0-9]{2,5}$'),
    name        text NOT NULL,
    unit_type   text NOT NULL,
    level       text NOT NULL CHECK (level IN ('province', 'district', 'commune')),
    parent_code text REFERENCES land.admin_unit (code),
    geom        geometry(MultiPolygon, 9218)
);
CREATE INDEX IF NOT EXISTS admin_unit_geom_idx ON land.admin_unit USING gist (geom);
COMMENT ON TABLE land.admin_unit IS 'Administrative units of Bình Thuận before the 2025-07-01 reform (the codes in force when the survey was made)';

-- Land-use type codes of the 2014 list (TT 25/2014), the 2024 list (TT 08/2024) and legacy parents.
CREATE TABLE IF NOT EXISTS land.land_use_code (
    code        text PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    name_vi     text NOT NULL,
    land_group  text NOT NULL,
    parent_2024 text,
    list_2014   text NOT NULL CHECK (list_2014 IN ('yes', 'no', 'parent', 'legacy')),
    list_2024   boolean NOT NULL,
    confidence  text NOT NULL CHECK (confidence IN ('H', 'M', 'L'))
);
COMMENT ON TABLE land.land_use_code IS 'Land-use codes; confidence M/L rows are the first to correct against TT 08/2024';

-- The validation rule catalogue (schemas/rules.yaml): stable codes and their severity.
CREATE TABLE IF NOT EXISTS land.rule (
    code           text PRIMARY KEY CHECK (code ~ '^[A-Z]+(_[A-Z]+)+$'),
    severity       text NOT NULL CHECK (severity IN ('reject', 'block', 'warn')),
    description_en text NOT NULL,
    description_vi text NOT NULL
);
