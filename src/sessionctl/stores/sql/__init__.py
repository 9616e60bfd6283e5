"""SQL table stores: the dialect-neutral table store and judge (table.py, judge.py), and one
module per dialect (sqlite.py; postgres.py imports its driver only when used)."""
