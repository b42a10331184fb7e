-- The search index of a pending report (PostgreSQL): for each of its customers, the keyed hash of
-- each name column and of the email (lowercased), so that a search for a whole name or address
-- finds its customers anywhere in the report at once. Keyed hashes are pseudonymised personal
-- data: a report's terms are deleted as soon as it leaves pending and approved.
CREATE TABLE retention_report_terms (
  report_id BIGINT NOT NULL,
  term TEXT NOT NULL,
  customer_id BIGINT NOT NULL,
  PRIMARY KEY (report_id, term, customer_id)
);
