-- Recording an outcome rewrites only the item's row (SQLite): the partial index of unprocessed
-- items is dropped, as on PostgreSQL; apply's keyset walks the primary key instead.
DROP INDEX IF EXISTS retention_report_items_pending;
