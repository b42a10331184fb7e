-- Each report item keeps its customer's last order time as of the report (SQLite), so the
-- report page and CSV read it with the item instead of searching the orders for every row.
ALTER TABLE retention_report_items ADD COLUMN last_order_at TEXT;
