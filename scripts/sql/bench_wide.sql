-- (Re)create public.<tbl> with <rows> rows of 10 columns for scripts/bench/apply.sh:
--   psql -1 -v tbl=bench_wide -v rows=1000000 -f scripts/sql/bench_wide.sql
-- The 7 columns of bench_rows.sql (same values) plus a double, a date and a varchar(16).
set client_min_messages = warning;
drop table if exists public.:"tbl";
create table public.:"tbl" (
  id bigint primary key,
  qty int not null,
  name text not null,
  price numeric(12,2) not null,
  created_at timestamptz not null,
  active boolean not null,
  note text,
  score double precision not null,
  day date not null,
  code varchar(16)
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
       timestamptz '2023-01-01 00:00:00+00' + ((g * 104729) % 63072000) * interval '1 second'
         + (g % 1000000) * interval '1 microsecond',
       (g * 31) % 7 <> 0,
       case when g % 10 = 0 then null
            else (array['leave at the back door','gift wrap, no invoice inside',
                        'call before delivery','fragile: glassware',
                        'deliver after 5pm','customer prefers email'])[1 + (g / 3) % 6]
                 || ' ref ' || substr(md5(g::text), 1, (6 + g % 14)::int) end,
       ((g * 48271) % 2147483647) / 65536.0::double precision,
       date '2020-01-01' + (g % 2000)::int,
       case when g % 7 = 0 then null else upper(substr(md5((g * 3)::text), 1, (4 + g % 12)::int)) end
from generate_series(1::bigint, :rows) as g;
