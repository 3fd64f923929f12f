-- recorded_at as microseconds since the epoch, as the chain hashes it.
CREATE FUNCTION ml_epoch_micros(t timestamptz) RETURNS bigint
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT (extract(epoch FROM t) * 1000000)::bigint $$;
