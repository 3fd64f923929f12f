-- the log: read and append, nothing else (the triggers refuse changes to the owner too)
REVOKE ALL ON events, checkpoints, idempotency_keys FROM PUBLIC, model_ledger_app;
GRANT SELECT, INSERT ON events, checkpoints, idempotency_keys TO model_ledger_app;
-- the views are the application's to rewrite (`projections rebuild` empties them)
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON tokens, model_states, versions,
  deployments, deployment_history, approvals, drift_alerts, policies, model_snapshots,
  jobs TO model_ledger_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_checkpoints, predictions, feedback
  TO model_ledger_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO model_ledger_app;
-- the startup check reads the schema's revision
GRANT SELECT ON alembic_version TO model_ledger_app;
