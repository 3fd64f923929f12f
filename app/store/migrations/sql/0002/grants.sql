-- The application role writes the views.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON model_states, versions, deployments,
      deployment_history, approvals, drift_alerts, policies, registry_snapshots,
      snapshot_models, snapshot_policies TO model_ledger_app;
  END IF;
END $$;
