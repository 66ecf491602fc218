-- Certificate serials in the form landpipe.extract.serial_text keeps them: compatibility
-- form (NFKC), runs of white space as one space, trimmed, capitals. Before, a serial typed
-- full-width (ＣＳ　０００１２３, as some Vietnamese input methods type it) was kept as typed,
-- and a later CS 000123 was taken for another certificate. A serial whose plain form is
-- already recorded is left as it is, with a notice: two certificates recorded under one
-- serial are a person's to resolve. (Every file re-runs on upgrade: only serials not yet in
-- that form are touched.)
DO $$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT serial, plain
        FROM (SELECT serial,
                     upper(btrim(regexp_replace(normalize(serial, NFKC), '\s+', ' ', 'g'))) AS plain
              FROM land.certificate) c
        WHERE serial <> plain
        ORDER BY serial
    LOOP
        IF EXISTS (SELECT FROM land.certificate WHERE serial = found.plain) THEN
            RAISE NOTICE USING MESSAGE = 'certificate ' || found.serial || ' is ' || found.plain
                || ' typed otherwise, which is recorded too: left as it is';
        ELSE
            UPDATE land.certificate SET serial = found.plain WHERE serial = found.serial;
        END IF;
    END LOOP;
END
$$;
