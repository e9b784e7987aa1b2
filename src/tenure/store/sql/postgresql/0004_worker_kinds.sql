-- tenure schema version 4 (PostgreSQL): the kinds each worker runs, published with its
-- membership row (a JSON array of kind names), so that fair share is counted per kind
-- over the workers that run it. NULL (a row from before this version): no kind.
ALTER TABLE tenure_workers ADD COLUMN kinds text;
