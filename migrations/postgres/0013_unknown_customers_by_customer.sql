-- Whether a customer is a venue's Unknown Customer record is asked of every idle customer a
-- selection reads and of every customer apply re-checks; the table was keyed by venue only, so
-- each probe read every venue's row: a fleet of 1,000 delete venues made each customer's check
-- a scan of 1,000 rows.
CREATE INDEX retention_unknown_customers_customer ON retention_unknown_customers (customer_id);
