"""History: per-peer counts in time bins, kept in an SQL database (issue 14).

bins.py accumulates the drains' deltas into clock-aligned bins (pure);
spool.py queues closed bins on disk until the database takes them;
store.py is the schema, its migrations, and the writes and reads in SQL;
sink.py ties them to the daemon's drain and writes from a thread of its own.
"""
