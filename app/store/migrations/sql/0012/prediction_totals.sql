-- A look's prediction counts, kept as the prediction log is written: each statement that
-- inserts predictions of an experiment (a COPY of the log's batch, typically) adds one row per
-- experiment, version and latency bucket, in its own transaction, so the row carries the same
-- transaction id as the predictions it counts. A look sums these rows instead of every
-- prediction. The buckets are 1% wide in the logarithm of the latency (see
-- workers/jobs/experiment.py); a missing latency has no bucket. The experiment job merges the
-- rows a recorded look counted (`counted_by`: below that look's horizon) so the table keeps a
-- few rows per bucket, not one per statement.
CREATE FUNCTION ml_latency_bucket(latency_us float8) RETURNS int
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT floor(ln(greatest(latency_us, 1.0)) * 100)::int $$;

CREATE FUNCTION ml_add_prediction_totals() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO prediction_totals (experiment_id, version, bucket, predictions, errors)
  SELECT experiment_id, version, ml_latency_bucket(latency_us),
         count(*), count(*) FILTER (WHERE score::text = 'null')
  FROM added
  WHERE experiment_id IS NOT NULL
  GROUP BY experiment_id, version, ml_latency_bucket(latency_us);
  RETURN NULL;
END $$;

CREATE TRIGGER predictions_add_totals AFTER INSERT ON predictions
REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION ml_add_prediction_totals();

-- the predictions already logged, counted by the transactions that wrote them
INSERT INTO prediction_totals (experiment_id, version, bucket, predictions, errors, txid)
SELECT experiment_id, version, ml_latency_bucket(latency_us),
       count(*), count(*) FILTER (WHERE score::text = 'null'), txid
FROM predictions
WHERE experiment_id IS NOT NULL
GROUP BY experiment_id, version, ml_latency_bucket(latency_us), txid;
