-- Target (PostgreSQL 18): the application's role, and the role pgrepart connects as, with only
-- what pgrepart needs there. Run once by the image's entrypoint, as postgres, in database shop.
\set ON_ERROR_STOP on

-- The application's role, which will own the new table after the cutover. Since PostgreSQL 15
-- the public schema gives no CREATE to everyone, and a table's owner needs it on the table's schema.
CREATE ROLE app LOGIN PASSWORD 'app';
GRANT USAGE, CREATE ON SCHEMA public TO app;

-- pgrepart: CREATE on the database for its state (schema pgrepart), CREATE on the schema for the
-- new table, and membership in app to hand the table over. No REPLICATION here: the target only
-- takes ordinary writes.
CREATE ROLE pgrepart LOGIN PASSWORD 'pgrepart';
GRANT CREATE ON DATABASE shop TO pgrepart;
GRANT USAGE, CREATE ON SCHEMA public TO pgrepart;
GRANT app TO pgrepart;
