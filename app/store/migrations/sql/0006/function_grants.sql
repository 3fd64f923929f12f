-- Only the application role may call the append function and its helpers.
DO $$
DECLARE fn regprocedure;
BEGIN
  FOR fn IN SELECT p.oid FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace
               AND p.proname IN ('ml_append', 'ml_frame_text', 'ml_epoch_micros')
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO model_ledger_app', fn);
  END LOOP;
END $$;
