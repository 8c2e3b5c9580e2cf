-- What a run's upstream calls were for: data, scope discovery, token requests, repeats. The four
-- add up to upstream_calls, which from now on counts token requests too.

ALTER TABLE etl.runs
    ADD COLUMN data_calls       integer NOT NULL DEFAULT 0,
    ADD COLUMN discovery_calls  integer NOT NULL DEFAULT 0,
    ADD COLUMN token_calls      integer NOT NULL DEFAULT 0,
    ADD COLUMN retry_calls      integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN etl.runs.upstream_calls IS 'HTTP requests the run sent upstream: data_calls + discovery_calls + token_calls + retry_calls (runs recorded before that breakdown existed counted data calls and their retries only).';
COMMENT ON COLUMN etl.runs.data_calls IS 'Requests for the dataset''s records (first attempts).';
COMMENT ON COLUMN etl.runs.discovery_calls IS 'Requests discovering the scopes (Roubler viewer and locations; first attempts), counted on the first window of the trigger that needed them; 0 when the scope cache answered.';
COMMENT ON COLUMN etl.runs.token_calls IS 'Requests to the vendor''s token endpoint this run''s calls made (fetching or refreshing an access token).';
COMMENT ON COLUMN etl.runs.retry_calls IS 'Requests that repeated an earlier attempt of a data or discovery call (after a transient fault, a 429 or a refused token).';
