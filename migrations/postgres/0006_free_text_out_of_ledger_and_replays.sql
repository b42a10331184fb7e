-- Free text leaves the ledger (PostgreSQL): reject and cancel reasons live only with their report
-- (retention_reports.state_reason, erased after approval.reasons_kept_for), so reasons already
-- copied into the decisions and audit events are removed.
UPDATE retention_decisions SET reason = NULL;
UPDATE retention_audit SET detail = 'the reason is kept with the report' WHERE event IN ('rejected', 'cancelled');
-- Erasures applied again by `retentiond replay` after a backup was restored (SPEC 9).
CREATE TABLE retention_replays (
  report_id BIGINT NOT NULL,
  customer_id BIGINT NOT NULL,
  venue_id BIGINT NOT NULL,
  action TEXT NOT NULL,
  replayed_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (report_id, customer_id)
);
