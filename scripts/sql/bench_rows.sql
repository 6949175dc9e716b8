-- (Re)create public.<tbl> with <rows> rows for the benchmarks (scripts/bench/*.sh):
--   psql -1 -v tbl=bench_rows -v rows=1000000 -f scripts/sql/bench_rows.sql
-- Columns: bigint, int, text, numeric(12,2), timestamptz, boolean, text. Deterministic but
-- varied values (hashes of id): names ~19-32 chars (avg 24), notes ~28-52 (avg 39), every
-- 10th note null.
set client_min_messages = warning;
drop table if exists public.:"tbl";
create table public.:"tbl" (
  id bigint primary key,
  qty int not null,
  name text not null,
  price numeric(12,2) not null,
  created_at timestamptz not null,
  active boolean not null,
  note text
);
insert into public.:"tbl"
select g,
       1 + (g * 7919) % 500,
       (array['Alice','Bartholomew','Chen','Dolores','Emeka','Francesca','Gunnar','Hiroshi',
              'Ingrid','Jamal'])[1 + g % 10] || ' ' ||
       (array['Okafor','Lindqvist','Fernandez','Nakamura','Schmidt','Kowalczyk','Haddad',
              'Oyelaran','MacAllister','Papadopoulos'])[1 + (g / 10) % 10] || ' ' ||
       lpad(g::text, 7, '0'),
       round(((g * 2654435761) % 9999900) / 100.0 + 0.99, 2),
       timestamptz '2023-01-01 00:00:00+00' + ((g * 104729) % 63072000) * interval '1 second',
       (g * 31) % 7 <> 0,
       case when g % 10 = 0 then null
            else (array['leave at the back door','gift wrap, no invoice inside',
                        'call before delivery','fragile: glassware',
                        'deliver after 5pm','customer prefers email'])[1 + (g / 3) % 6]
                 || ' ref ' || substr(md5(g::text), 1, (6 + g % 14)::int) end
from generate_series(1::bigint, :rows) as g;
