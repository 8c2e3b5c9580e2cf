-- One rate budget per source for every process on this database (replicas and backfills), and
-- what each process spent of it. See src/executor/shared_budget.rs for the protocol.

CREATE TABLE etl.rate_budgets (
    source               text PRIMARY KEY,
    calls                integer NOT NULL CHECK (calls > 0),
    window_ms            bigint NOT NULL CHECK (window_ms > 0),
    announced_limit      integer CHECK (announced_limit >= 0),
    announced_window_ms  bigint CHECK (announced_window_ms > 0),
    blocked_until        timestamptz,
    slots                timestamptz[] NOT NULL DEFAULT '{}',
    updated_at           timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE etl.rate_budgets IS 'One row per source: the sliding log of its recent upstream calls across every process on this database, and what the upstream said about the budget. A process takes a slot with one UPDATE per call; never more than the limit of calls count at once, so no window of the limit''s length holds more calls than the limit.';
COMMENT ON COLUMN etl.rate_budgets.source IS 'Configured source name.';
COMMENT ON COLUMN etl.rate_budgets.calls IS 'Calls allowed per window, as configured by the process that last started (each process enforces its own configured limit against the shared log).';
COMMENT ON COLUMN etl.rate_budgets.window_ms IS 'Length of the rate-limit window in milliseconds, as configured by the process that last started.';
COMMENT ON COLUMN etl.rate_budgets.announced_limit IS 'A lower limit the upstream announced (X-RateLimit-Limit and friends); applies to every process until an answer says otherwise. NULL: the configured limit applies.';
COMMENT ON COLUMN etl.rate_budgets.announced_window_ms IS 'A longer window the upstream announced (RateLimit-Policy w=), in milliseconds; NULL: the configured window applies.';
COMMENT ON COLUMN etl.rate_budgets.blocked_until IS 'No process sends a call to this source before this instant (Retry-After, or nothing remaining until the upstream''s reset).';
COMMENT ON COLUMN etl.rate_budgets.slots IS 'The calls that still count, one element each: for a finished call, the instant it stops counting (its end plus one window and a safety margin); for a call in flight, a lease far enough ahead to outlast its timeout. Elements in the past are dropped by the next call.';
COMMENT ON COLUMN etl.rate_budgets.updated_at IS 'Last change.';

CREATE TABLE etl.rate_budget_usage (
    source          text NOT NULL,
    instance_id     uuid NOT NULL REFERENCES etl.instances (id),
    calls           bigint NOT NULL DEFAULT 0,
    waited_ms       bigint NOT NULL DEFAULT 0,
    fallback_calls  bigint NOT NULL DEFAULT 0,
    first_call_at   timestamptz NOT NULL DEFAULT now(),
    last_call_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, instance_id)
);
COMMENT ON TABLE etl.rate_budget_usage IS 'Per source and process: the upstream calls it made under the shared budget and how long it waited for budget. Shown by `reporting-etl runs`.';
COMMENT ON COLUMN etl.rate_budget_usage.source IS 'Configured source name.';
COMMENT ON COLUMN etl.rate_budget_usage.instance_id IS 'The process (etl.instances.id).';
COMMENT ON COLUMN etl.rate_budget_usage.calls IS 'Upstream calls that took a slot of the shared budget (retries included, token requests excluded).';
COMMENT ON COLUMN etl.rate_budget_usage.waited_ms IS 'Milliseconds those calls waited for budget (this process''s own limiter and the shared one).';
COMMENT ON COLUMN etl.rate_budget_usage.fallback_calls IS 'Calls made while the database was unreachable, under the reduced in-process limit (recorded once it was back).';
COMMENT ON COLUMN etl.rate_budget_usage.first_call_at IS 'When the first counted call was recorded.';
COMMENT ON COLUMN etl.rate_budget_usage.last_call_at IS 'When the latest counted call was recorded.';
