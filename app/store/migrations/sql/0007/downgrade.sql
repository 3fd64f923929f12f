-- A chained checkpoint's signature covers its sequence: without the column it could no
-- longer be verified, and the rows cannot be deleted (the table is append-only).
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM checkpoints WHERE sequence IS NOT NULL) THEN
    RAISE EXCEPTION 'chained checkpoints exist: they cannot be kept by revision 0006';
  END IF;
END $$;
