-- Sample source schema for database `shop` (the demo and the tests capture it).
-- Idempotent: safe to load again; seed rows go in only while the tables are empty.
-- REPLICA IDENTITY stays DEFAULT (primary key), as on most production tables.
-- Load: psql -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 15432 -U postgres -d shop -f scripts/sql/shop.sql

SET client_min_messages = warning; -- quiet "already exists, skipping" on reloads

CREATE TABLE IF NOT EXISTS public.customers (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    created_at timestamptz DEFAULT now(),
    vip        boolean DEFAULT false
);

CREATE TABLE IF NOT EXISTS public.orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint,
    amount      numeric(12,2),
    status      text,
    note        text,
    placed_at   timestamptz DEFAULT now()
);

BEGIN;
-- Serialises concurrent loads, so two of them cannot both see empty tables.
LOCK TABLE public.customers, public.orders IN SHARE ROW EXCLUSIVE MODE;

INSERT INTO public.customers (name, email, vip)
SELECT v.name, v.email, v.vip
FROM (VALUES
        ('Ada Lovelace',   'ada@example.com',    true),
        ('Grace Hopper',   'grace@example.com',  false),
        ('Edsger Dijkstra', NULL,                false),
        ('Zoë Ångström',   'zoe@example.org',    false),
        ('李小龙',          'bruce@example.cn',   true)
     ) AS v(name, email, vip)
WHERE NOT EXISTS (SELECT 1 FROM public.customers);

INSERT INTO public.orders (customer_id, amount, status, note)
SELECT c.id, v.amount, v.status, v.note
FROM (VALUES
        ('ada@example.com',   19.99,    'paid',      'first order'),
        ('ada@example.com',   -5.00,    'refunded',  'negative amount: refund'),
        ('grace@example.com', 1234.50,  'shipped',   NULL),
        ('zoe@example.org',   0.01,     'new',       'note with ''quotes'' and ünïcödé'),
        ('bruce@example.cn',  9999999999.99, 'delivered', 'max numeric(12,2)')
     ) AS v(email, amount, status, note)
JOIN public.customers c ON c.email = v.email
WHERE NOT EXISTS (SELECT 1 FROM public.orders);
COMMIT;
