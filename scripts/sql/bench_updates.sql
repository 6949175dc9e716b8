-- The update-heavy window of scripts/bench/apply.sh: 1,000,000 changes over the 200,000 keys
-- of public.<tbl> (filled by bench_wide.sql with rows=200000), in this order:
--   4 rounds of updates of every row (800,000), updates of ids 1..145,000 (145,000),
--   deletes of every 4th id (50,000), re-inserts of every 40th id (5,000).
-- Each statement is its own transaction. Run:
--   psql -v tbl=bench_upd -f scripts/sql/bench_updates.sql
set client_min_messages = warning;
update public.:"tbl" set qty = qty + 1, price = price + 0.01, note = 'round 1 ' || id;
update public.:"tbl" set qty = qty + 1, score = score / 2, active = not active;
update public.:"tbl" set qty = qty + 1, created_at = created_at + interval '1 hour 1 microsecond';
update public.:"tbl" set qty = qty + 1, code = case when code is null then 'NEW' else null end;
update public.:"tbl" set name = name || ' jr', day = day + 1 where id <= 145000;
delete from public.:"tbl" where id % 4 = 0;
insert into public.:"tbl"
select g, 7, 'back ' || g, 1.50, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',
       true, null, g / 3.0, date '2026-01-01', 'RE'
from generate_series(40, 200000, 40) as g;
