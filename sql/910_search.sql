-- Finding parcels as a district land office asks for them: by the owner's name as typed (with
-- or without diacritics), and by a point (from a phone's GPS, or read off a map in VN-2000).

-- A name as searched for: Vietnamese letters without their diacritics (đ as d), in lower case,
-- composed the same way (NFC) and with single spaces, so that "Nguyễn Văn An", "NGUYEN VAN AN"
-- and a decomposed "Nguyễn" match alike.
CREATE OR REPLACE FUNCTION land.fold_vietnamese(value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(btrim(regexp_replace(translate(normalize(value, NFC),
        'àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬÈÉẺẼẸÊỀẾỂỄỆÌÍỈĨỊÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢÙÚỦŨỤƯỪỨỬỮỰỲÝỶỸỴĐðÐ',
        'aaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyydaaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyyddd'),
        '\s+', ' ', 'g')))
$$;

-- A regular expression for the names that fold (land.fold_vietnamese) to what `name` folds
-- to: each of its letters a, e, i, o, u, y, d stands for any of its Vietnamese forms in either
-- case, any other character but a letter or digit for any one character, and a space for any
-- run of spaces. Matching it against the stored names (~*) costs a tenth of folding each one.
CREATE OR REPLACE FUNCTION land.owner_pattern(name text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT replace(replace(replace(replace(replace(replace(replace(replace(regexp_replace(land.fold_vietnamese(name), '[^[:alnum:] ]', '.', 'g'),
        'a', '[aAàáảãạăằắẳẵặâầấẩẫậÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬ]'),
        'e', '[eEèéẻẽẹêềếểễệÈÉẺẼẸÊỀẾỂỄỆ]'),
        'i', '[iIìíỉĩịÌÍỈĨỊ]'),
        'o', '[oOòóỏõọôồốổỗộơờớởỡợÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢ]'),
        'u', '[uUùúủũụưừứửữựÙÚỦŨỤƯỪỨỬỮỰ]'),
        'y', '[yYỳýỷỹỵỲÝỶỸỴ]'),
        'd', '[dDđĐðÐ]'), ' ', '\s+')
$$;

-- Current parcels whose owner's name holds `name` (land.fold_vietnamese on both: case,
-- diacritics and how the text was composed do not matter), in one commune or all, with
-- whether each is ready for a certificate: SELECT * FROM land.parcels_of_owner('nguyen van an').
-- A name with no letter or digit (nothing, or a stray percent sign or '.*', whose
-- characters each stand for any one character) finds nothing.
CREATE OR REPLACE FUNCTION land.parcels_of_owner(name text, commune text DEFAULT NULL)
RETURNS TABLE (commune_code text, sheet_no integer, parcel_no integer, owner_name text,
               address text, area_m2 numeric, land_use_codes text[], ready boolean)
LANGUAGE sql STABLE AS $$
    WITH wanted AS MATERIALIZED (
        SELECT land.owner_pattern(name) AS pattern
        WHERE land.fold_vietnamese(name) ~ '[[:alnum:]]'
    ), found AS MATERIALIZED (
        SELECT p.* FROM land.parcel p, wanted w
        WHERE p.owner_name ~* w.pattern AND (commune IS NULL OR p.commune_code = commune)
    )
    SELECT f.commune_code, f.sheet_no, f.parcel_no, f.owner_name, f.address, f.area_m2,
           f.land_use_codes, f.id IN (SELECT r.id FROM land.parcel_ready r
                                      WHERE r.id = ANY (ARRAY(SELECT id FROM found)))
    FROM found f
    ORDER BY f.commune_code, f.sheet_no, f.parcel_no
$$;
COMMENT ON FUNCTION land.parcels_of_owner(text, text) IS 'Current parcels whose owner''s name holds the text, ignoring case and Vietnamese diacritics: SELECT * FROM land.parcels_of_owner(''nguyen van an'')';

-- Current parcels at a point given in `srid` (4326: longitude, latitude; 9218: VN-2000 easting,
-- northing): the one holding it, or those within `within_m` metres of it, nearest first.
CREATE OR REPLACE FUNCTION land.parcels_near(x double precision, y double precision,
                                             srid integer DEFAULT 4326,
                                             within_m double precision DEFAULT 0)
RETURNS TABLE (commune_code text, sheet_no integer, parcel_no integer, owner_name text,
               address text, area_m2 numeric, distance_m numeric, ready boolean)
LANGUAGE sql STABLE SET search_path FROM CURRENT SET jit = off AS $$
    WITH here AS MATERIALIZED (
        SELECT ST_Transform(ST_SetSRID(ST_MakePoint(x, y), srid), 9218) AS point
    ), found AS MATERIALIZED (
        SELECT p.*, ST_Distance(p.geom, here.point) AS distance
        FROM land.parcel p, here
        WHERE ST_DWithin(p.geom, here.point, within_m)
    )
    SELECT f.commune_code, f.sheet_no, f.parcel_no, f.owner_name, f.address, f.area_m2,
           round(f.distance::numeric, 2),
           f.id IN (SELECT r.id FROM land.parcel_ready r
                    WHERE r.id = ANY (ARRAY(SELECT id FROM found)))
    FROM found f
    ORDER BY f.distance, f.commune_code, f.sheet_no, f.parcel_no
$$;
COMMENT ON FUNCTION land.parcels_near(double precision, double precision, integer, double precision) IS 'Current parcels at a point (longitude, latitude by default; srid 9218 for VN-2000 easting, northing), or within within_m of it, nearest first: SELECT * FROM land.parcels_near(108.089567, 10.935862, within_m => 10)';
