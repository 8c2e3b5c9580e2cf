-- Expand for the previous release (docs/migrations.md). A binary from before 0008 records a failed
-- or interrupted run without error_kind, which runs_error_kind_iff_failing refuses: during a
-- rolling update every failure of the old process became unrecordable and its runs stayed
-- `running`. This trigger gives such a row the kind `unknown` before the check sees it, so the
-- constraint keeps its meaning (every failing run has a kind, no other run has one) for every
-- writer. The first migration recorded in etl.schema_migrations (src/store/migrations.rs says
-- why not in _sqlx_migrations).

CREATE FUNCTION etl.runs_kind_for_previous_writers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('failed', 'interrupted') AND NEW.error_kind IS NULL THEN
        NEW.error_kind := 'unknown';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION etl.runs_kind_for_previous_writers() IS 'Gives a failed or interrupted run written without error_kind (by a release from before error kinds, running beside a newer one) the kind unknown.';

CREATE TRIGGER runs_kind_for_previous_writers
    BEFORE INSERT OR UPDATE OF status ON etl.runs
    FOR EACH ROW EXECUTE FUNCTION etl.runs_kind_for_previous_writers();

COMMENT ON COLUMN etl.runs.error_kind IS 'Why a failed or interrupted run did not succeed (NULL for every other status): quota (daily quota spent), rate_limited (429s or a wait beyond rate_budget.max_wait_secs), reauthorise (run auth login), unauthorised (credentials refused), upstream_unavailable (unreachable or 5xx through the retries), upstream_rejected (HTTP 400/403/404 or a redirect), scope_refused (the scope is unknown to the vendor), timeout (window_deadline_secs), invalid_answer (an unusable answer or paging), schema_mismatch (query and vendor schema disagree), database, lock_lost, cancelled (process stopped), process_died, config, internal (unclassified: a bug), unknown (recorded before kinds existed, or by a release from before them running beside a newer one).';

-- The schema version is no secret, and read-only commands (runs, jobs, auth status) check it
-- with whatever role runs them.
GRANT SELECT ON etl.schema_migrations TO PUBLIC;
COMMENT ON TABLE etl.schema_migrations IS 'Migrations from 9 on, as sqlx records them (version, description, checksum, success); 1-8 are in _sqlx_migrations, which releases before 9 check strictly, so nothing new is recorded there. A version here that a binary does not know makes it refuse to start (exit 2).';
COMMENT ON COLUMN etl.schema_migrations.version IS 'The migration''s number (migrations/NNNN_*.sql).';
COMMENT ON COLUMN etl.schema_migrations.description IS 'The rest of its file name.';
COMMENT ON COLUMN etl.schema_migrations.installed_on IS 'When it was applied.';
COMMENT ON COLUMN etl.schema_migrations.success IS 'Whether it was applied completely.';
COMMENT ON COLUMN etl.schema_migrations.checksum IS 'SHA-384 of the file as applied: a binary whose file differs refuses the database.';
COMMENT ON COLUMN etl.schema_migrations.execution_time IS 'How long it took, in nanoseconds.';
