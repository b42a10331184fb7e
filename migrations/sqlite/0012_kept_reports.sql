-- Whether any report has customers kept out of it is asked before every selection (an empty
-- exclusion is left out of the statement); without an index that was a scan of every report,
-- which at 1,000 venues made each venue's selection wait on the whole fleet's reports.
CREATE INDEX retention_reports_kept ON retention_reports (kept_count);
