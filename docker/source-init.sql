-- Source (PostgreSQL 14): the application's role and table, and the role pgrepart connects as,
-- with only what pgrepart needs. Run once by the image's entrypoint, as postgres, in database shop.
\set ON_ERROR_STOP on

-- The application: it owns the table.
CREATE ROLE app LOGIN PASSWORD 'app';
GRANT USAGE, CREATE ON SCHEMA public TO app;

SET ROLE app;
CREATE TABLE orders_flat (
    id          bigserial PRIMARY KEY,
    order_date  timestamp NOT NULL,
    customer_id int NOT NULL,
    region      text NOT NULL,
    amount      numeric(10,2),
    details     text
);
CREATE INDEX ON orders_flat (order_date);
CREATE INDEX ON orders_flat (customer_id);
INSERT INTO orders_flat (order_date, customer_id, region, amount, details)
SELECT timestamp '2024-01-01' + i * interval '1 minute', i % 5000,
       (ARRAY['US', 'EU', 'ASIA', 'LATAM'])[1 + i % 4],
       CASE WHEN i % 50 = 0 THEN NULL ELSE (i % 100000) / 100.0 END,
       'order ' || i
FROM generate_series(1, 100000) i;
ANALYZE orders_flat;
RESET ROLE;

-- pgrepart: REPLICATION for the slot and the stream; CREATE on the database for the publication;
-- CREATE on the schema for the new table (with --target it is built on the target instead);
-- membership in the owner's role to publish and rename the table.
CREATE ROLE pgrepart LOGIN REPLICATION PASSWORD 'pgrepart';
GRANT CREATE ON DATABASE shop TO pgrepart;
GRANT USAGE, CREATE ON SCHEMA public TO pgrepart;
GRANT app TO pgrepart;
