-- The durable outbox, approval tokens (hashes only) and reminder bookkeeping (SQLite).
CREATE TABLE retention_outbox (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  report_id INTEGER,
  venue_id INTEGER NOT NULL,
  recipient TEXT NOT NULL,
  detail TEXT,
  created_at TEXT NOT NULL,
  next_attempt_at TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  sent_at TEXT,
  last_error TEXT
);
CREATE INDEX retention_outbox_due ON retention_outbox (sent_at, next_attempt_at);
CREATE TABLE retention_tokens (
  token_hash TEXT PRIMARY KEY,
  report_id INTEGER NOT NULL REFERENCES retention_reports (id),
  approver TEXT NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL
);
ALTER TABLE retention_reports ADD COLUMN reminded_at TEXT;
