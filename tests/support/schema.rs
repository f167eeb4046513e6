//! The seed table and its partitioned target, as in `shared/seed`: `orders_flat` (PK `id`) becomes
//! `orders_list`, LIST-partitioned by `region` (US, EU, ASIA and a DEFAULT that takes LATAM).
//!
//! Seed rows are deterministic: row `g` (1-based) has
//! - `region` = US, EU, ASIA, LATAM in turn (so a quarter lands in the DEFAULT partition),
//! - `amount` NULL when `g % 10 == 0`,
//! - `details` 12,800 chars of chained md5 hex when `g % 50 == 0` (incompressible, so stored out of
//!   line in TOAST), NULL when `g % 7 == 0`, else a short text,
//! - `order_date` whole seconds in 2024.

use tokio_postgres::Client;

/// The seed's regions, in the order rows cycle through them; LATAM has no partition of its own.
pub const REGIONS: [&str; 4] = ["US", "EU", "ASIA", "LATAM"];

/// Length of a seed row's large `details` (400 md5 hex digests).
pub const SEED_BIG_DETAILS_LEN: usize = 400 * 32;

/// Quotes an identifier for SQL (`orders` -> `"orders"`). Names are unqualified.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates `table` with the seed's columns and fills it with `rows` rows (see the module doc).
pub async fn create_seed_table(client: &Client, table: &str, rows: usize) {
    let t = ident(table);
    let sql = format!(
        "CREATE TABLE {t} (
             id BIGSERIAL PRIMARY KEY,
             order_date TIMESTAMP NOT NULL,
             customer_id INT NOT NULL,
             region TEXT NOT NULL,
             amount NUMERIC(10,2),
             details TEXT
         );
         INSERT INTO {t} (order_date, customer_id, region, amount, details)
         SELECT timestamp '2024-01-01' + ((g::bigint * 7919) % 31536000) * interval '1 second',
                (g::bigint * 7919) % 100000 + 1,
                (ARRAY['US','EU','ASIA','LATAM'])[1 + (g - 1) % 4],
                CASE WHEN g % 10 = 0 THEN NULL ELSE ((g * 1237) % 1000000) / 100.0 END,
                CASE WHEN g % 50 = 0 THEN
                         (SELECT string_agg(md5(g::text || ':' || i::text), '' ORDER BY i)
                          FROM generate_series(1, 400) AS i)
                     WHEN g % 7 = 0 THEN NULL
                     ELSE 'order ' || g || ' of customer ' || (g::bigint * 7919) % 100000
                END
         FROM generate_series(1, {rows}) AS g;
         ANALYZE {t};"
    );
    client.batch_execute(&sql).await.unwrap_or_else(|e| {
        panic!(
            "create seed table {table}: {}",
            crate::support::describe(&e)
        )
    });
}

/// Creates `table` as an already partitioned version of the seed table: the same columns and rows
/// (`create_seed_table`), LIST-partitioned by region with the primary key (id, region) (PostgreSQL
/// requires the partition key in it), partitions `<table>_us`, `<table>_eu`, `<table>_asia` and
/// `<table>_other` (DEFAULT), and a partitioned index on `customer_id`.
pub async fn create_list_partitioned_seed_table(client: &Client, table: &str, rows: usize) {
    let flat = format!("{table}_seed_rows");
    create_seed_table(client, &flat, rows).await;
    let t = ident(table);
    let f = ident(&flat);
    let part = |suffix: &str| ident(&format!("{table}_{suffix}"));
    let sql = format!(
        "CREATE TABLE {t} (
             id BIGSERIAL,
             order_date TIMESTAMP NOT NULL,
             customer_id INT NOT NULL,
             region TEXT NOT NULL,
             amount NUMERIC(10,2),
             details TEXT,
             PRIMARY KEY (id, region)
         ) PARTITION BY LIST (region);
         CREATE TABLE {us} PARTITION OF {t} FOR VALUES IN ('US');
         CREATE TABLE {eu} PARTITION OF {t} FOR VALUES IN ('EU');
         CREATE TABLE {asia} PARTITION OF {t} FOR VALUES IN ('ASIA');
         CREATE TABLE {other} PARTITION OF {t} DEFAULT;
         CREATE INDEX ON {t} (customer_id);
         INSERT INTO {t} SELECT * FROM {f};
         SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}));
         DROP TABLE {f};
         ANALYZE {t};",
        us = part("us"),
        eu = part("eu"),
        asia = part("asia"),
        other = part("other"),
    );
    client.batch_execute(&sql).await.unwrap_or_else(|e| {
        panic!(
            "create partitioned seed table {table}: {}",
            crate::support::describe(&e)
        )
    });
}

/// Creates the seed's target: `name` LIST-partitioned by region with PK (id, region), partitions
/// `<name>_us`, `<name>_eu`, `<name>_asia`, `<name>_default` (DEFAULT) and indexes on `order_date` and
/// `customer_id`. Empty; no default on `id` (the migration hands over the sequence).
pub async fn create_seed_target(client: &Client, name: &str) {
    let t = ident(name);
    let part = |suffix: &str| ident(&format!("{name}_{suffix}"));
    let sql = format!(
        "CREATE TABLE {t} (
             id BIGINT NOT NULL,
             order_date TIMESTAMP NOT NULL,
             customer_id INT NOT NULL,
             region TEXT NOT NULL,
             amount NUMERIC(10,2),
             details TEXT,
             CONSTRAINT {pk} PRIMARY KEY (id, region)
         ) PARTITION BY LIST (region);
         CREATE TABLE {us} PARTITION OF {t} FOR VALUES IN ('US');
         CREATE TABLE {eu} PARTITION OF {t} FOR VALUES IN ('EU');
         CREATE TABLE {asia} PARTITION OF {t} FOR VALUES IN ('ASIA');
         CREATE TABLE {default} PARTITION OF {t} DEFAULT;
         CREATE INDEX ON {t} (order_date);
         CREATE INDEX ON {t} (customer_id);",
        pk = ident(&format!("{name}_pk")),
        us = part("us"),
        eu = part("eu"),
        asia = part("asia"),
        default = part("default"),
    );
    client.batch_execute(&sql).await.unwrap_or_else(|e| {
        panic!(
            "create seed target {name}: {}",
            crate::support::describe(&e)
        )
    });
}

/// Bytes stored in `table`'s TOAST relation (0 when nothing is stored out of line).
pub async fn toast_bytes(client: &Client, table: &str) -> i64 {
    client
        .query_one(
            "SELECT COALESCE(pg_relation_size(NULLIF(reltoastrelid, 0)), 0)::bigint
             FROM pg_class WHERE oid = $1::text::regclass",
            &[&ident(table)],
        )
        .await
        .unwrap_or_else(|e| panic!("toast size of {table}: {}", crate::support::describe(&e)))
        .get(0)
}

/// `customers` for every id the seed and the writers use (1..=100000) plus some for the churn,
/// the seed table with its key onto them (ON UPDATE CASCADE ON DELETE CASCADE, `DEFERRABLE` when
/// `deferrable`), and `order_items` (with its order's region, kept in step by a trigger)
/// referencing the seed table: a foreign key each way.
pub async fn create_shop(client: &Client, rows: usize, deferrable: bool) {
    client
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text); \
             INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 100000) g;",
        )
        .await
        .unwrap_or_else(|e| panic!("customers: {}", super::describe(&e)));
    create_seed_table(client, "orders_flat", rows).await;
    let deferrable = if deferrable { " DEFERRABLE" } else { "" };
    client
        .batch_execute(&format!(
            "ALTER TABLE orders_flat ADD CONSTRAINT orders_flat_customer_id_fkey \
               FOREIGN KEY (customer_id) REFERENCES customers (id) ON UPDATE CASCADE ON DELETE CASCADE{deferrable}; \
             CREATE INDEX orders_flat_customer_id_idx ON orders_flat (customer_id); \
             CREATE TABLE order_items (item_id bigserial PRIMARY KEY, order_id bigint NOT NULL, region text NOT NULL, qty int, \
               CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id) REFERENCES orders_flat (id) ON UPDATE CASCADE ON DELETE CASCADE); \
             INSERT INTO order_items (order_id, region, qty) SELECT id, region, 1 FROM orders_flat WHERE id % 5 = 0; \
             CREATE FUNCTION order_items_follow_region() RETURNS trigger LANGUAGE plpgsql AS \
               $$BEGIN UPDATE order_items SET region = NEW.region WHERE order_id = NEW.id; RETURN NULL; END$$; \
             CREATE TRIGGER orders_flat_region AFTER UPDATE OF region ON orders_flat \
               FOR EACH ROW EXECUTE FUNCTION order_items_follow_region();"
        ))
        .await
        .unwrap_or_else(|e| panic!("shop schema: {}", super::describe(&e)));
}
