-- Later migrations in this run (and alembic's own bookkeeping) act as the owner.
DO $$
BEGIN
  IF current_user <> 'model_ledger_owner' THEN
    SET LOCAL ROLE model_ledger_owner;
  END IF;
END $$;
