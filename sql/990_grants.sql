-- Read-only role for district land offices, analysts and QGIS (created here, granted to people by the DBA).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'land_reader') THEN
        CREATE ROLE land_reader NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA land TO land_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA land TO land_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA land GRANT SELECT ON TABLES TO land_reader;
