#!/bin/sh
# The application's writes on the source, twice a second, one transaction each: an insert, an
# update, a row moved to another region, a delete. Errors are printed and the loop goes on (after
# the cutover the source table is renamed and every write fails, as it should).
set -u
URL=${WRITER_URL:-postgresql://app:app@source:5432/shop}
until psql -X -q "$URL" -c 'SELECT 1 FROM orders_flat LIMIT 1' >/dev/null 2>&1; do sleep 1; done
echo "writer: writing to orders_flat"
n=0
while true; do
    psql -X -q "$URL" -v ON_ERROR_STOP=1 <<'SQL' >/dev/null || echo "writer: a write failed"
BEGIN;
INSERT INTO orders_flat (order_date, customer_id, region, amount, details)
VALUES (now(), (random() * 5000)::int, (ARRAY['US', 'EU', 'ASIA', 'LATAM', 'MX'])[1 + (random() * 4)::int], 1.50, 'new');
UPDATE orders_flat SET amount = coalesce(amount, 0) + 1 WHERE id = (SELECT 1 + (random() * 100000)::int);
UPDATE orders_flat SET region = (ARRAY['US', 'EU', 'ASIA', 'LATAM', 'MX'])[1 + (random() * 4)::int]
 WHERE id = (SELECT 1 + (random() * 100000)::int);
DELETE FROM orders_flat WHERE id = (SELECT 1 + (random() * 100000)::int);
COMMIT;
SQL
    n=$((n + 1))
    [ $((n % 120)) = 0 ] && echo "writer: $n transactions"
    sleep 0.5
done
