-- Refuses a change to an append-only table (the triggers of immutable.sql).
CREATE FUNCTION ml_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'raise_exception';
END $$;
