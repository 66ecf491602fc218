-- Finding parcels as a district land office asks for them: by the owner's name as typed (with
-- or without diacritics), and by a point (from a phone's GPS, or read off a map in VN-2000).

-- A name as searched for: Vietnamese letters without their diacritics (đ as d), in lower case,
-- composed the same way (NFC) and with single spaces, so that "Nguyễn Văn An", "NGUYEN VAN AN"
-- and a decomposed "Nguyễn" match alike.
CREATE OR REPLACE FUNCTION land.fold_vietnamese(value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(btrim(regexp_replace(translate(normalize(value, NFC),
        'àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬÈÉẺẼẸÊỀẾỂỄỆÌÍỈĨỊÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢÙÚỦŨỤƯỪỨỬỮỰỲÝỶỸỴĐ',
        'aaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyydaaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyyd'),
        '\s+', ' ', 'g')))
$$;

-- Current parcels whose owner's name holds `name` (land.fold_vietnamese on both), in one
-- commune or all: SELECT * FROM land.parcels_of_owner('nguyen van an').
CREATE OR REPLACE FUNCTION land.parcels_of_owner(name text, commune text DEFAULT NULL)
RETURNS TABLE (commune_code text, sheet_no integer, parcel_no integer, owner_name text,
               address text, area_m2 numeric, land_use_codes text[], ready boolean)
LANGUAGE sql STABLE AS $$
    SELECT p.commune_code, p.sheet_no, p.parcel_no, p.owner_name, p.address, p.area_m2,
           p.land_use_codes, EXISTS (SELECT FROM land.parcel_ready r WHERE r.id = p.id)
    FROM land.parcel p
    WHERE strpos(land.fold_vietnamese(p.owner_name), land.fold_vietnamese(name)) > 0
      AND (commune IS NULL OR p.commune_code = commune)
    ORDER BY p.commune_code, p.sheet_no, p.parcel_no
$$;
COMMENT ON FUNCTION land.parcels_of_owner(text, text) IS 'Current parcels whose owner''s name holds the text, ignoring case and Vietnamese diacritics: SELECT * FROM land.parcels_of_owner(''nguyen van an'')';

-- Current parcels at a point given in `srid` (4326: longitude, latitude; 9218: VN-2000 easting,
-- northing): the one holding it, or those within `within_m` metres of it, nearest first.
CREATE OR REPLACE FUNCTION land.parcels_near(x double precision, y double precision,
                                             srid integer DEFAULT 4326,
                                             within_m double precision DEFAULT 0)
RETURNS TABLE (commune_code text, sheet_no integer, parcel_no integer, owner_name text,
               address text, area_m2 numeric, distance_m numeric, ready boolean)
LANGUAGE sql STABLE AS $$
    WITH here AS (SELECT ST_Transform(ST_SetSRID(ST_MakePoint(x, y), srid), 9218) AS point)
    SELECT p.commune_code, p.sheet_no, p.parcel_no, p.owner_name, p.address, p.area_m2,
           round(ST_Distance(p.geom, here.point)::numeric, 2),
           EXISTS (SELECT FROM land.parcel_ready r WHERE r.id = p.id)
    FROM land.parcel p, here
    WHERE ST_DWithin(p.geom, here.point, within_m)
    ORDER BY ST_Distance(p.geom, here.point), p.commune_code, p.sheet_no, p.parcel_no
$$;
COMMENT ON FUNCTION land.parcels_near(double precision, double precision, integer, double precision) IS 'Current parcels at a point (longitude, latitude by default; srid 9218 for VN-2000 easting, northing), or within within_m of it, nearest first: SELECT * FROM land.parcels_near(108.089567, 10.935862, within_m => 10)';
