-- Discovered scopes per source, shared by every process on this database, so that jobs of one
-- source do not each rediscover its companies and locations (see src/store/scope_cache.rs).

CREATE TABLE etl.scope_cache (
    source         text PRIMARY KEY,
    scopes         jsonb NOT NULL,
    discovered_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE etl.scope_cache IS 'Per source, the scopes its last discovery found upstream (Roubler: the companies the API user reaches and each one''s locations with their time zones). Used instead of asking the vendor again while younger than the source''s discovery_ttl_secs; dropped when the vendor refuses a scope taken from it.';
COMMENT ON COLUMN etl.scope_cache.source IS 'Configured source name.';
COMMENT ON COLUMN etl.scope_cache.scopes IS 'What discovery found, as JSON (Roubler: {"companies": [{"id", "locations": [{"id", "time_zone"}]}]}).';
COMMENT ON COLUMN etl.scope_cache.discovered_at IS 'When the vendor was asked (database clock); the entry is used until this plus the source''s discovery_ttl_secs.';
