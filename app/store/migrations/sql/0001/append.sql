-- Appends a batch of requests (group commit) in one statement. Request i owns r_count[i]
-- consecutive entries of the e_* arrays. The advisory lock is held until commit, so
-- positions are assigned in commit order: a reader that has seen N never later finds N-1.
-- (ml_frame_text and ml_epoch_micros are STABLE, not IMMUTABLE, so PostgreSQL can inline
-- them.)
CREATE FUNCTION ml_append(
  r_stream text[], r_expected bigint[], r_idem_scope text[], r_idem_key text[],
  r_idem_digest text[], r_count int[],
  e_event_id uuid[], e_type text[], e_data text[], e_meta text[]
) RETURNS TABLE (
  o_req int, o_status text, o_first bigint, o_last bigint, o_version bigint,
  o_recorded_at timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
  head_pos bigint; head_hash bytea; head_time timestamptz; ts timestamptz; ts_bytes bytea;
  i int; j int := 1; k int; n int; cur bigint; first_pos bigint; h bytea; slot int;
  idem record; dup_ids uuid[];
  seen_streams text[] := '{}'; seen_versions bigint[] := '{}';
  row_pos bigint[] := '{}'; row_stream text[] := '{}'; row_version bigint[] := '{}';
  row_entry int[] := '{}'; row_prev bytea[] := '{}'; row_hash bytea[] := '{}';
BEGIN
  PERFORM pg_advisory_xact_lock(7244501);
  SELECT e.position, e.hash, e.recorded_at INTO head_pos, head_hash, head_time
    FROM events e ORDER BY e.position DESC LIMIT 1;
  IF head_pos IS NULL THEN
    head_pos := 0; head_hash := decode(repeat('00', 32), 'hex'); head_time := '-infinity';
  END IF;
  -- recorded_at never decreases along the log, so "as of time T" is a prefix.
  ts := greatest(clock_timestamp(), head_time);
  ts_bytes := int8send(ml_epoch_micros(ts));
  -- Ids already recorded (a retried job or request): one indexed probe per id, driven
  -- from the array so the planner cannot pick a scan of the whole log.
  SELECT array_agg(x.event_id) INTO dup_ids
    FROM unnest(e_event_id) AS u(id) JOIN events x ON x.event_id = u.id;
  FOR i IN 1 .. coalesce(array_length(r_stream, 1), 0) LOOP
    n := r_count[i];
    o_req := i - 1; o_first := NULL; o_last := NULL; o_version := NULL; o_recorded_at := NULL;
    IF r_idem_key[i] IS NOT NULL THEN
      SELECT * INTO idem FROM idempotency_keys x
        WHERE x.scope = r_idem_scope[i] AND x.key = r_idem_key[i];
      IF FOUND THEN
        o_status := CASE WHEN idem.request_digest = r_idem_digest[i]
                         THEN 'replayed' ELSE 'mismatch' END;
        o_first := idem.first_position; o_last := idem.last_position;
        RETURN NEXT; j := j + n; CONTINUE;
      END IF;
    END IF;
    IF dup_ids IS NOT NULL AND e_event_id[j : j + n - 1] && dup_ids THEN
      SELECT min(x.position), max(x.position) INTO o_first, o_last
        FROM unnest(e_event_id[j : j + n - 1]) AS u(id) JOIN events x ON x.event_id = u.id;
      o_status := 'duplicate';
      RETURN NEXT; j := j + n; CONTINUE;
    END IF;
    slot := array_position(seen_streams, r_stream[i]);
    IF slot IS NULL THEN
      SELECT coalesce(max(e.version), 0) INTO cur FROM events e WHERE e.stream = r_stream[i];
    ELSE
      cur := seen_versions[slot];
    END IF;
    IF r_expected[i] IS NOT NULL AND r_expected[i] <> cur THEN
      o_status := 'conflict'; o_version := cur;
      RETURN NEXT; j := j + n; CONTINUE;
    END IF;
    first_pos := head_pos + 1;
    FOR k IN j .. j + n - 1 LOOP
      head_pos := head_pos + 1; cur := cur + 1;
      h := sha256(head_hash || int8send(head_pos) || int8send(cur) || uuid_send(e_event_id[k])
                  || ml_frame_text(r_stream[i]) || ml_frame_text(e_type[k])
                  || ml_frame_text(e_data[k]) || ml_frame_text(e_meta[k]) || ts_bytes);
      row_pos := row_pos || head_pos; row_stream := row_stream || r_stream[i];
      row_version := row_version || cur; row_entry := row_entry || k;
      row_prev := row_prev || head_hash; row_hash := row_hash || h;
      head_hash := h;
    END LOOP;
    IF slot IS NULL THEN
      seen_streams := seen_streams || r_stream[i]; seen_versions := seen_versions || cur;
    ELSE
      seen_versions[slot] := cur;
    END IF;
    IF r_idem_key[i] IS NOT NULL THEN
      INSERT INTO idempotency_keys (scope, key, request_digest, stream, first_position,
                                    last_position, created_at)
        VALUES (r_idem_scope[i], r_idem_key[i], r_idem_digest[i], r_stream[i], first_pos,
                head_pos, ts);
    END IF;
    o_status := 'ok'; o_first := first_pos; o_last := head_pos; o_version := cur;
    o_recorded_at := ts;
    RETURN NEXT;
    j := j + n;
  END LOOP;
  -- one statement for every row of the batch
  INSERT INTO events (position, stream, version, event_id, type, data, meta, recorded_at,
                      prev_hash, hash)
    SELECT r.pos, r.stream, r.version, e_event_id[r.entry], e_type[r.entry],
           e_data[r.entry]::json, e_meta[r.entry]::json, ts, r.prev, r.hash
      FROM unnest(row_pos, row_stream, row_version, row_entry, row_prev, row_hash)
        AS r(pos, stream, version, entry, prev, hash);
END $$;
