-- tenure schema version 9 (PostgreSQL): nothing changes here. On MySQL/MariaDB this
-- version adds the index of each owner's tasks in key order that PostgreSQL's claim has
-- walked since version 8.
SELECT 1;
