-- At a million deployments (issue 10): history, /stats and /metrics read only what they show.

-- /history (env, newest first) and the /stats window (finished since …) are ranges of these; the
-- trailing columns make them covering, so /stats never reads the table itself.
CREATE INDEX deployments_env_finished ON deployments (env, finished_at, id, kind, state, started_at, failed_at, rollback_of);
CREATE INDEX deployments_finished ON deployments (finished_at, id, env, kind, state, started_at, failed_at, rollback_of);
-- "rolled back by #…" in history and "undone by a later /rollback" in /stats.
CREATE INDEX deployments_rollback_of ON deployments (rollback_of, finished_at, env, started_at);
-- The job runner's claim: the few jobs that may run, oldest first, not a walk of the history.
-- The state list is the one claim_job names, so the planner can prove it applies.
CREATE INDEX deployments_claimable ON deployments (id)
    WHERE state IN ('queued', 'scheduled', 'running', 'verifying', 'monitoring', 'rolling_back');

-- Deployments per state, kept by triggers so /metrics reads a dozen rows instead of counting a
-- million on every scrape. Seeded from what is there.
CREATE TABLE deployment_counts (
    state TEXT   PRIMARY KEY,
    n     BIGINT NOT NULL
);
INSERT INTO deployment_counts (state, n) SELECT state, COUNT(*) FROM deployments GROUP BY state;

CREATE TRIGGER deployment_counts_insert AFTER INSERT ON deployments
BEGIN
    INSERT OR IGNORE INTO deployment_counts (state, n) VALUES (NEW.state, 0);
    UPDATE deployment_counts SET n = n + 1 WHERE state = NEW.state;
END;

CREATE TRIGGER deployment_counts_update AFTER UPDATE OF state ON deployments WHEN OLD.state <> NEW.state
BEGIN
    INSERT OR IGNORE INTO deployment_counts (state, n) VALUES (NEW.state, 0);
    UPDATE deployment_counts SET n = n + CASE WHEN state = NEW.state THEN 1 ELSE -1 END WHERE state IN (OLD.state, NEW.state);
END;

CREATE TRIGGER deployment_counts_delete AFTER DELETE ON deployments
BEGIN
    UPDATE deployment_counts SET n = n - 1 WHERE state = OLD.state;
END;
