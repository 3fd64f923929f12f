-- The chain framing of ml_append must match `domain.chain.canonical_bytes` exactly:
-- a text is its UTF-8 length (4 bytes, big-endian) then its bytes.
CREATE FUNCTION ml_frame_text(t text) RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT int4send(octet_length(convert_to(t, 'UTF8'))) || convert_to(t, 'UTF8') $$;
