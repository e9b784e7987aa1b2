-- tenure schema version 7 (SQLite): nothing changes here. On PostgreSQL this version adds
-- an index of the tasks a claim may take without asking whose they were; a SQLite store
-- serves one host's few workers, and its claim is not the one that scans.
SELECT 1;
