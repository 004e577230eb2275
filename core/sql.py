"""SQL fragments shared by the apps."""

# A WHERE condition that turns synchronous_commit off for the statement's own transaction
# (set_config's is_local): in autocommit, its commit returns without waiting for the WAL
# flush. Only for writes whose loss in a crash of PostgreSQL is harmless; inside an open
# transaction it would relax the whole transaction, so callers check first.
UNFLUSHED = "set_config('synchronous_commit', 'off', true) IS NOT NULL"
