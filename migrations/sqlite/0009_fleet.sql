-- A fleet's report lists by state (`reports list --state`) read an index, not the whole table.
CREATE INDEX retention_reports_state ON retention_reports (state, id);
