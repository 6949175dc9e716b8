-- A steady stream of inserts, updates and deletes on public.customers/orders, about
-- four small transactions a second, for the demo. Needs scripts/sql/shop.sql loaded.
-- Rows with other statuses (refunded, delivered) are left alone.
-- Run: psql -v seconds=20 -h 127.0.0.1 -p 15432 -U postgres -d shop -f scripts/sql/workload.sql
\set ON_ERROR_STOP on
\if :{?seconds}
\else
\set seconds 20
\endif
-- psql variables do not reach into a DO body; a custom setting does.
SET db_sync.workload_seconds = :'seconds';

DO $$
DECLARE
    deadline timestamptz := clock_timestamp()
        + make_interval(secs => current_setting('db_sync.workload_seconds')::int);
    n   int := 0;
    cid bigint;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        n := n + 1;
        IF n % 5 = 1 THEN
            INSERT INTO public.customers (name, email)
            VALUES ('customer ' || n, 'c' || n || '@example.com')
            RETURNING id INTO cid;
        ELSE
            SELECT id INTO cid FROM public.customers ORDER BY random() LIMIT 1;
        END IF;

        INSERT INTO public.orders (customer_id, amount, status, note)
        VALUES (cid, round((random() * 500)::numeric, 2), 'new', 'workload tx ' || n);

        UPDATE public.orders
        SET status = CASE status WHEN 'new' THEN 'paid' ELSE 'shipped' END,
            amount = amount + 1
        WHERE id = (SELECT id FROM public.orders WHERE status IN ('new', 'paid')
                    ORDER BY random() LIMIT 1);

        IF n % 7 = 0 THEN
            UPDATE public.customers SET vip = NOT vip WHERE id = cid;
        END IF;
        IF n % 4 = 0 THEN
            DELETE FROM public.orders
            WHERE id = (SELECT min(id) FROM public.orders WHERE status = 'shipped');
        END IF;

        COMMIT; -- one source transaction per loop (DO may commit at top level)
        PERFORM pg_sleep(0.25);
    END LOOP;
    RAISE NOTICE 'workload: % transactions committed', n;
END
$$;
