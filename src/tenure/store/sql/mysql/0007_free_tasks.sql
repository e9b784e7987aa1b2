-- tenure schema version 7 (MySQL/MariaDB): nothing changes here. On PostgreSQL this
-- version adds a partial index of the tasks a claim may take without asking whose they
-- were; MySQL has no partial indexes.
SELECT 1;
