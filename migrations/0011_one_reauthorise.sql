-- One spelling in the database (issue 27): a source a person must log in for again is
-- `reauthorise` in etl.tokens.status, as etl.runs.error_kind (0008) spells the kind.
--
-- An expand (docs/migrations.md): the previous release still writes and reads `reauthorize`, so
-- both spellings are accepted and this release reads both, writing only `reauthorise`. Rows
-- written before are rewritten by the contract that follows in a later release, when no release
-- that reads only `reauthorize` may run beside it (rewriting them now would make a running
-- previous release forget that its sources wait for a person).

ALTER TABLE etl.tokens DROP CONSTRAINT IF EXISTS tokens_status_check;
ALTER TABLE etl.tokens
    ADD CONSTRAINT tokens_status_known CHECK (status IN ('ok', 'reauthorise', 'reauthorize'));
COMMENT ON COLUMN etl.tokens.status IS 'ok, or reauthorise when the vendor refused the refresh token and a person must run auth login (reauthorize: the same, as releases before migration 0011 spell it).';
