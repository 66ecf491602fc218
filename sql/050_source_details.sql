-- How each delivery was read (text encoding, field mapping source), and findings that involve
-- two parcels (an overlap, a gap) or an area.
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS text_encoding text;
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS text_encoding_how text
    CHECK (text_encoding_how IN ('option', 'declared', 'detected', 'format'));
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS text_encoding_confidence real;
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS text_encoding_declared text;
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS field_mapping_how text
    CHECK (field_mapping_how IN ('option', 'detected'));
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS linework boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN land.batch.text_encoding_how IS 'option (--encoding), declared (.cpg the text agrees with), detected (scored from the text), format (the format stores Unicode)';

ALTER TABLE land.finding ADD COLUMN IF NOT EXISTS other_commune_code text;
ALTER TABLE land.finding ADD COLUMN IF NOT EXISTS other_sheet_no integer;
ALTER TABLE land.finding ADD COLUMN IF NOT EXISTS other_parcel_no integer;
ALTER TABLE land.finding ADD COLUMN IF NOT EXISTS area_m2 numeric(14, 2);
