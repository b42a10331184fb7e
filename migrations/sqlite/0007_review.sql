-- The approver's review (SQLite): customers kept out of a report (who, when, why), the report's
-- share of its venue, and approvals tied to the kept list they were given for.
ALTER TABLE retention_report_items ADD COLUMN kept_by TEXT;
ALTER TABLE retention_report_items ADD COLUMN kept_at TEXT;
ALTER TABLE retention_report_items ADD COLUMN kept_reason TEXT;
-- Both indexes hold only kept items: selection looks them up by customer, pages by report.
CREATE INDEX retention_report_items_kept ON retention_report_items (customer_id, kept_at) WHERE kept_at IS NOT NULL;
CREATE INDEX retention_report_items_kept_by_report ON retention_report_items (report_id, customer_id) WHERE kept_at IS NOT NULL;
ALTER TABLE retention_reports ADD COLUMN kept_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE retention_reports ADD COLUMN kept_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE retention_reports ADD COLUMN venue_customers INTEGER;
ALTER TABLE retention_decisions ADD COLUMN kept_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE retention_reports ADD COLUMN activity_years TEXT;
