-- tenure schema version 9 (SQLite): nothing changes here. On MySQL/MariaDB this version
-- adds the index of each owner's tasks in key order that PostgreSQL's claim has walked
-- since version 8; a SQLite store serves one host's few workers.
SELECT 1;
