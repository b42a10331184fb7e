-- Holds and prospects (SPEC 12): an item skipped because a hold holds its customer names the
-- hold; a report records what each hold kept back of the venue's otherwise-idle customers
-- (JSON), and which rule it follows ("customers" or "prospects"). The legal hold's old
-- outcome becomes the hold outcome, naming the legal hold.
ALTER TABLE retention_report_items ADD COLUMN held_by TEXT;
ALTER TABLE retention_reports ADD COLUMN held_back TEXT;
ALTER TABLE retention_reports ADD COLUMN rule TEXT;
UPDATE retention_report_items SET outcome = 'skipped_held', held_by = 'legal hold' WHERE outcome = 'skipped_legal_hold';
