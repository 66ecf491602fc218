-- What the parcel diagram of a certificate and a cadastral extract need from the register
-- (TT 10/2024 Phụ lục 03; TT 25/2014 Phụ lục 13; shared/DOMAIN.md): the coordinate table of
-- the parcel's vertices with the length of each edge, and the neighbouring parcels. These
-- functions, and the other lookups of one parcel (land.parcels_near,
-- land.unloaded_neighbours), plan their queries without JIT compilation: the row estimates
-- of the functions they call set it off, and compiling took 0.3-0.5 s of a 1 ms lookup.

-- The vertices of a current parcel, in the storage CRS (VN-2000), as a coordinate table: X is
-- the northing and Y the easting, as Vietnamese surveyors write them, in metres to the
-- centimetre; to_next_m is the length of the edge to the next vertex of the ring (the last
-- vertex's edge closes the ring; a point repeated in a row counts once). Numbered 1..n over
-- the whole parcel: each outer ring clockwise from its vertex nearest the north-west corner
-- of its bounding box, its holes (counter-clockwise) after it; `part` and `ring` (0: the
-- outer ring, 1..: holes) say where each vertex lies.
CREATE OR REPLACE FUNCTION land.parcel_vertices(commune text, sheet integer, parcel integer)
RETURNS TABLE (vertex_no integer, part integer, ring integer, x_m numeric, y_m numeric,
               to_next_m numeric)
LANGUAGE sql STABLE SET search_path FROM CURRENT SET jit = off AS $$
    WITH rings AS (
        SELECT d.path[1] AS part, r.path[1] AS ring, ST_ExteriorRing(r.geom) AS geom
        FROM land.parcel_version v
        CROSS JOIN LATERAL ST_Dump(ST_ForcePolygonCW(ST_RemoveRepeatedPoints(v.geom))) d
        CROSS JOIN LATERAL ST_DumpRings(d.geom) r
        WHERE v.commune_code = commune AND v.sheet_no = sheet AND v.parcel_no = parcel
          AND v.valid_to IS NULL
    ), points AS (
        -- Each vertex once (a ring repeats its first at the end), with the next one.
        SELECT r.part, r.ring, p.path[1] AS i, ST_NPoints(r.geom) - 1 AS n, p.geom,
               ST_PointN(r.geom, p.path[1] + 1) AS next,
               ST_Distance(p.geom, ST_SetSRID(ST_MakePoint(ST_XMin(r.geom), ST_YMax(r.geom)), ST_SRID(r.geom)))
                   AS from_corner
        FROM rings r
        CROSS JOIN LATERAL ST_DumpPoints(r.geom) p
        WHERE p.path[1] < ST_NPoints(r.geom)
    ), started AS (
        -- Where each ring's numbering starts: its vertex nearest the corner (of two as near,
        -- the northern, then the western one), wherever the ring was stored to start.
        SELECT p.*, first_value(p.i) OVER (PARTITION BY p.part, p.ring
                                          ORDER BY p.from_corner, ST_Y(p.geom) DESC,
                                                   ST_X(p.geom)) AS start
        FROM points p
    )
    SELECT (row_number() OVER (ORDER BY s.part, s.ring, mod(s.i - s.start + s.n, s.n)))::integer,
           s.part, s.ring,
           round(ST_Y(s.geom)::numeric, 2), round(ST_X(s.geom)::numeric, 2),
           round(ST_Distance(s.geom, s.next)::numeric, 2)
    FROM started s
    ORDER BY 1
$$;
COMMENT ON FUNCTION land.parcel_vertices(text, integer, integer) IS 'Coordinate table of a current parcel for its certificate diagram: vertex number, X (northing), Y (easting) in VN-2000 to the cm, length of the edge to the next vertex: SELECT * FROM land.parcel_vertices(''22924'', 3, 118)';

-- The length of boundary two parcels share: the first snapped onto the second where within
-- tolerance_m of it (boundaries drawn a little apart still meet).
CREATE OR REPLACE FUNCTION land.shared_boundary_m(a geometry, b geometry,
                                                  tolerance_m double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path FROM CURRENT AS $$
    SELECT ST_Length(ST_Intersection(ST_Boundary(ST_Snap(a, b, tolerance_m)), ST_Boundary(b)))
$$;

-- The current parcels that share a stretch of boundary with a current parcel (a corner is not
-- enough), longest shared boundary first: the neighbours a parcel diagram names. Boundaries
-- drawn a little apart still meet: the parcel is snapped onto the neighbour where within
-- tolerance_m of it (the TOPO_EDGE_MISMATCH tolerance by default, 5 cm), and a neighbour
-- shares more than that.
DROP FUNCTION IF EXISTS land.parcel_neighbours(text, integer, integer);
CREATE OR REPLACE FUNCTION land.parcel_neighbours(commune text, sheet integer, parcel integer,
                                                  tolerance_m double precision DEFAULT 0.05)
RETURNS TABLE (commune_code text, sheet_no integer, parcel_no integer, shared_m numeric)
LANGUAGE sql STABLE SET search_path FROM CURRENT SET jit = off AS $$
    SELECT n.commune_code, n.sheet_no, n.parcel_no, round(shared.length::numeric, 2)
    FROM land.parcel_version p
    JOIN land.parcel_version n
      ON n.valid_to IS NULL AND n.geom && ST_Expand(p.geom, tolerance_m) AND n.id <> p.id
    CROSS JOIN LATERAL (
        SELECT land.shared_boundary_m(p.geom, n.geom, tolerance_m) AS length
    ) shared
    WHERE p.commune_code = commune AND p.sheet_no = sheet AND p.parcel_no = parcel
      AND p.valid_to IS NULL AND ST_DWithin(p.geom, n.geom, tolerance_m)
      AND shared.length > tolerance_m
    ORDER BY shared.length DESC, n.commune_code, n.sheet_no, n.parcel_no
$$;
COMMENT ON FUNCTION land.parcel_neighbours(text, integer, integer, double precision) IS 'Current parcels sharing a stretch of boundary with a current parcel (within tolerance_m, 5 cm by default), with its length in m: SELECT * FROM land.parcel_neighbours(''22924'', 3, 118)';
