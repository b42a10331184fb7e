-- The unprocessed customers of each report, for apply batches and resumes (SQLite).
CREATE INDEX retention_report_items_pending ON retention_report_items (report_id, customer_id) WHERE outcome IS NULL;
