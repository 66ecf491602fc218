-- The register's sessions count time in Vietnam's (Asia/Ho_Chi_Minh, UTC+7): a date typed
-- where a moment is asked for is Vietnamese midnight, so land.parcels_at('22924', '2026-01-01')
-- is the commune as it was when 1 January began in Bình Thuận, not 07:00 that morning; and
-- psql, QGIS and notebooks show the moments of batches and versions in Vietnamese time.
-- Moments are stored as they are (timestamptz); only how a session reads and writes them as
-- text changes, from the next session on. A session may still SET TIME ZONE for itself.
-- Setting a database's default takes its owner: a register whose user does not own the
-- database keeps the server's time zone, with a notice.
DO $$
BEGIN
    EXECUTE 'ALTER DATABASE ' || quote_ident(current_database())
        || ' SET timezone TO ' || quote_literal('Asia/Ho_Chi_Minh');
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE USING MESSAGE = 'the time zone of database ' || current_database()
        || ' stays the server''s: only its owner may set it to Asia/Ho_Chi_Minh (ALTER DATABASE '
        || quote_ident(current_database()) || ' SET timezone TO ''Asia/Ho_Chi_Minh'')';
END
$$;
