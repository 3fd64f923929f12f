-- The application role writes the snapshots.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON model_snapshots TO model_ledger_app;
    -- a rebuild empties the views with TRUNCATE: no dead rows for its inserts to skip
    GRANT TRUNCATE ON tokens, model_states, versions, deployments, deployment_history,
      approvals, drift_alerts, policies, model_snapshots, jobs TO model_ledger_app;
  END IF;
END $$;
