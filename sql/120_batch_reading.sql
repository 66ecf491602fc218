-- How each batch read its delivery: loading the same file again is a no-op only when it is
-- read the same way (text encoding, field mapping, CRS, the options filling keys and scale,
-- and landpipe's reading version; landpipe.sources.Delivery.reading_context). NULL for
-- batches loaded before this column, and for refusals.
ALTER TABLE land.batch ADD COLUMN IF NOT EXISTS reading_context bytea;
COMMENT ON COLUMN land.batch.reading_context IS 'Digest of how the delivery was read (encoding, mapping, CRS, options): a load of the same file read the same way is unchanged';
