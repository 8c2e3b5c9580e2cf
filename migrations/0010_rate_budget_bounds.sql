-- A learned rate-limit policy is evidence, not law (issue 26): what the upstream's headers
-- announced lapses unless answers keep confirming it, and a limit below one call is no limit.
-- Announced values written by older versions carried no bounds (one `RateLimit-Policy: 1;w=86400`
-- stopped a source in every process for a day): they are dropped and re-learned from the next
-- answers.

UPDATE etl.rate_budgets SET announced_limit = NULL, announced_window_ms = NULL;
ALTER TABLE etl.rate_budgets
    ADD COLUMN announced_until timestamptz,
    ADD CONSTRAINT rate_budgets_announced_limit_positive CHECK (announced_limit >= 1);
COMMENT ON COLUMN etl.rate_budgets.announced_until IS 'The announced limit and window apply until this instant; a process writes them again while answers confirm them. After it, the configured limit applies until an answer says otherwise.';
COMMENT ON COLUMN etl.rate_budgets.announced_limit IS 'The limit the upstream''s headers announced (at least 1), while announced_until lies ahead; applies to every process until an answer says otherwise. NULL: the configured limit applies.';
COMMENT ON COLUMN etl.rate_budgets.announced_window_ms IS 'The window the upstream''s headers named or implied, in milliseconds, never longer than rate_budget.max_wait_secs, while announced_until lies ahead. NULL: the configured window applies.';
