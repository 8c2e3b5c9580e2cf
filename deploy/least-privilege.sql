-- Least-privilege roles for reporting-etl.
--
-- reporting_etl     the service's login role (the writer). It may connect, create temporary
--                   tables (the page writer's staging tables) and run the migrations, so it owns
--                   the schemas and every table it creates; nothing else in the cluster.
-- reporting_reader  a group role for analysts: SELECT on the vendor schemas (retarus, roubler,
--                   altrata, retently) and on the views etl.freshness and etl.latest_success,
--                   nothing else — in particular not etl.tokens (refresh tokens) and no writes.
--                   Give it to a person with `GRANT reporting_reader TO alice;`.
--
-- Run it as a superuser or the database's owner, connected to the service's database:
--
--   psql "$ADMIN_URL/reporting" -v ON_ERROR_STOP=1 -f deploy/least-privilege.sql
--   psql "$ADMIN_URL/reporting" -c "ALTER ROLE reporting_etl PASSWORD '…'"   -- or \password
--
-- once before the service's first start, and again after it (and after every upgrade): the
-- views are created by the service's migrations, so their grants can only be given once they
-- exist. Running it again is always safe. Vendor tables added by later migrations are readable
-- by reporting_reader without a re-run (default privileges).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reporting_etl') THEN
        CREATE ROLE reporting_etl LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reporting_reader') THEN
        CREATE ROLE reporting_reader NOLOGIN;
    END IF;
    -- The database name is only known at run time.
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY, CREATE ON DATABASE %I TO reporting_etl', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO reporting_reader', current_database());
END
$$;

-- The migrations' bookkeeping table (_sqlx_migrations) lives in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO reporting_etl;

-- The service's schemas, owned by the writer so its migrations can create and alter tables.
CREATE SCHEMA IF NOT EXISTS etl AUTHORIZATION reporting_etl;
CREATE SCHEMA IF NOT EXISTS retarus AUTHORIZATION reporting_etl;
CREATE SCHEMA IF NOT EXISTS roubler AUTHORIZATION reporting_etl;
CREATE SCHEMA IF NOT EXISTS altrata AUTHORIZATION reporting_etl;
CREATE SCHEMA IF NOT EXISTS retently AUTHORIZATION reporting_etl;
-- The raw archive (the vendors' answers as received, for rebuilds): the writer's alone; analysts
-- see its size through etl.archive_sizes and etl.freshness.
CREATE SCHEMA IF NOT EXISTS archive AUTHORIZATION reporting_etl;
GRANT USAGE, CREATE ON SCHEMA etl, retarus, roubler, altrata, retently, archive TO reporting_etl;

-- Analysts: the vendor tables, now and in the future …
GRANT USAGE ON SCHEMA retarus, roubler, altrata, retently TO reporting_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA retarus, roubler, altrata, retently TO reporting_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE reporting_etl IN SCHEMA retarus, roubler, altrata, retently
    GRANT SELECT ON TABLES TO reporting_reader;

-- … and the etl views, but no etl table: a view runs with its owner's rights, so the reader sees
-- run outcomes through etl.freshness without any right on etl.runs, let alone etl.tokens.
GRANT USAGE ON SCHEMA etl TO reporting_reader;
REVOKE ALL ON ALL TABLES IN SCHEMA etl FROM reporting_reader;
DO $$
DECLARE
    view_name text;
BEGIN
    FOREACH view_name IN ARRAY ARRAY['etl.freshness', 'etl.latest_success', 'etl.archive_sizes'] LOOP
        IF to_regclass(view_name) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON %s TO reporting_reader', view_name);
        END IF;
    END LOOP;
END
$$;
