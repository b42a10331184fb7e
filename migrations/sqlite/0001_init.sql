-- retentiond's own tables (SQLite). Timestamps are UTC text as datetime() writes them.
CREATE TABLE retention_reports (
  id INTEGER PRIMARY KEY,
  venue_id INTEGER NOT NULL,
  action TEXT NOT NULL,
  policy TEXT NOT NULL,
  cutoff TEXT NOT NULL,
  state TEXT NOT NULL,
  customer_count INTEGER NOT NULL,
  approvals_required INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  decided_at TEXT,
  applied_at TEXT,
  state_reason TEXT
);
CREATE INDEX retention_reports_venue ON retention_reports (venue_id, created_at);
CREATE TABLE retention_report_items (
  report_id INTEGER NOT NULL REFERENCES retention_reports (id),
  customer_id INTEGER NOT NULL,
  outcome TEXT,
  processed_at TEXT,
  PRIMARY KEY (report_id, customer_id)
);
CREATE TABLE retention_decisions (
  id INTEGER PRIMARY KEY,
  report_id INTEGER NOT NULL REFERENCES retention_reports (id),
  decision TEXT NOT NULL,
  decided_by TEXT NOT NULL,
  via TEXT NOT NULL,
  reason TEXT,
  decided_at TEXT NOT NULL
);
CREATE INDEX retention_decisions_report ON retention_decisions (report_id);
CREATE TABLE retention_anonymised (
  customer_id INTEGER PRIMARY KEY,
  venue_id INTEGER NOT NULL,
  report_id INTEGER NOT NULL,
  anonymised_at TEXT NOT NULL
);
CREATE TABLE retention_unknown_customers (
  venue_id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE retention_audit (
  id INTEGER PRIMARY KEY,
  at TEXT NOT NULL,
  venue_id INTEGER NOT NULL,
  report_id INTEGER,
  event TEXT NOT NULL,
  actor TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX retention_audit_venue ON retention_audit (venue_id, id);
