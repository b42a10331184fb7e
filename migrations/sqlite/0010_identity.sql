-- The database's identity, written once by `migrate` (a random value): a restored backup keeps
-- it and another database has another, so each erasure journal line names the database it was
-- written for and `replay` refuses a journal of another database (SPEC 9).
CREATE TABLE retention_identity (
    singleton INTEGER PRIMARY KEY,
    database_id VARCHAR(64) NOT NULL
);
