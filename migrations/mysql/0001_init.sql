-- retentiond's own tables (MySQL and MariaDB, InnoDB). MySQL support began at schema version 7:
-- this first migration creates the tables as versions 1 to 7 left them on the other backends,
-- and 0002 to 0007 have nothing left to do here. Times are DATETIME(6) in UTC (every session of
-- the service runs with time_zone = '+00:00'). Text that is looked up or indexed is VARCHAR.
CREATE TABLE IF NOT EXISTS retention_reports (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  venue_id BIGINT NOT NULL,
  action VARCHAR(20) NOT NULL,
  policy TEXT NOT NULL,
  cutoff DATETIME(6) NOT NULL,
  state VARCHAR(20) NOT NULL,
  customer_count BIGINT NOT NULL,
  approvals_required INTEGER NOT NULL,
  created_at DATETIME(6) NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  decided_at DATETIME(6),
  applied_at DATETIME(6),
  state_reason TEXT,
  reminded_at DATETIME(6),
  kept_count INTEGER NOT NULL DEFAULT 0,
  kept_version INTEGER NOT NULL DEFAULT 0,
  venue_customers BIGINT,
  activity_years TEXT,
  INDEX retention_reports_venue (venue_id, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
-- Each report item keeps its customer's last order time as of the report, and who kept it out of
-- the report (when, why). The two secondary indexes serve selection (kept customers by customer)
-- and the pages (kept customers by report).
CREATE TABLE IF NOT EXISTS retention_report_items (
  report_id BIGINT NOT NULL,
  customer_id BIGINT NOT NULL,
  outcome VARCHAR(20),
  processed_at DATETIME(6),
  last_order_at DATETIME(6),
  kept_by VARCHAR(320),
  kept_at DATETIME(6),
  kept_reason TEXT,
  PRIMARY KEY (report_id, customer_id),
  INDEX retention_report_items_kept (customer_id, kept_at),
  INDEX retention_report_items_kept_by_report (report_id, kept_at),
  FOREIGN KEY (report_id) REFERENCES retention_reports (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE IF NOT EXISTS retention_decisions (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  report_id BIGINT NOT NULL,
  decision VARCHAR(20) NOT NULL,
  decided_by VARCHAR(320) NOT NULL,
  via VARCHAR(20) NOT NULL,
  reason TEXT,
  decided_at DATETIME(6) NOT NULL,
  kept_version INTEGER NOT NULL DEFAULT 0,
  INDEX retention_decisions_report (report_id),
  FOREIGN KEY (report_id) REFERENCES retention_reports (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE IF NOT EXISTS retention_anonymised (
  customer_id BIGINT PRIMARY KEY,
  venue_id BIGINT NOT NULL,
  report_id BIGINT NOT NULL,
  anonymised_at DATETIME(6) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE IF NOT EXISTS retention_unknown_customers (
  venue_id BIGINT PRIMARY KEY,
  customer_id BIGINT NOT NULL,
  created_at DATETIME(6) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE IF NOT EXISTS retention_audit (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  at DATETIME(6) NOT NULL,
  venue_id BIGINT NOT NULL,
  report_id BIGINT,
  event VARCHAR(40) NOT NULL,
  actor VARCHAR(320) NOT NULL,
  detail TEXT NOT NULL,
  INDEX retention_audit_venue (venue_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
-- The durable outbox and approval tokens (hashes only).
CREATE TABLE IF NOT EXISTS retention_outbox (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  kind VARCHAR(40) NOT NULL,
  report_id BIGINT,
  venue_id BIGINT NOT NULL,
  recipient VARCHAR(320) NOT NULL,
  detail TEXT,
  created_at DATETIME(6) NOT NULL,
  next_attempt_at DATETIME(6) NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  sent_at DATETIME(6),
  last_error TEXT,
  INDEX retention_outbox_due (sent_at, next_attempt_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE IF NOT EXISTS retention_tokens (
  token_hash VARCHAR(128) PRIMARY KEY,
  report_id BIGINT NOT NULL,
  approver VARCHAR(320) NOT NULL,
  created_at DATETIME(6) NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  FOREIGN KEY (report_id) REFERENCES retention_reports (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
-- Erasures applied again by `retentiond replay` after a backup was restored (SPEC 9).
CREATE TABLE IF NOT EXISTS retention_replays (
  report_id BIGINT NOT NULL,
  customer_id BIGINT NOT NULL,
  venue_id BIGINT NOT NULL,
  action VARCHAR(20) NOT NULL,
  replayed_at DATETIME(6) NOT NULL,
  PRIMARY KEY (report_id, customer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
