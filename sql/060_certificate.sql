-- Land-use right certificates (Giấy chứng nhận quyền sử dụng đất) issued by district offices,
-- each on one version of a parcel, and the parcels the data can stand behind.
CREATE TABLE IF NOT EXISTS land.certificate (
    serial             text PRIMARY KEY,
    commune_code       text NOT NULL,
    sheet_no           integer NOT NULL,
    parcel_no          integer NOT NULL,
    parcel_version_id  bigint NOT NULL REFERENCES land.parcel_version (id),
    holder             text NOT NULL,
    issued_on          date NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS certificate_key_idx ON land.certificate (commune_code, sheet_no, parcel_no);
COMMENT ON TABLE land.certificate IS 'Issued land-use right certificates, each on the parcel version it was issued for';
