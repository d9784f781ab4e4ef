-- At a million deployments (issue 10): history, /stats and /metrics read only what they show.

-- /history (env, newest first) and the /stats window (finished since …) are ranges of these; the
-- trailing columns make them covering, so /stats can answer from index-only scans.
CREATE INDEX deployments_env_finished ON deployments (env, finished_at, id, kind, state, started_at, failed_at, rollback_of);
CREATE INDEX deployments_finished ON deployments (finished_at, id, env, kind, state, started_at, failed_at, rollback_of);
-- "rolled back by #…" in history and "undone by a later /rollback" in /stats.
CREATE INDEX deployments_rollback_of ON deployments (rollback_of, finished_at, env, started_at);
-- The job runner's claim: the few jobs that may run, oldest first, not a walk of the history.
-- The state list is the one claim_job names, so the planner can prove it applies.
CREATE INDEX deployments_claimable ON deployments (id)
    WHERE state IN ('queued', 'scheduled', 'running', 'verifying', 'monitoring', 'rolling_back');

-- Deployments per state, kept by a trigger so /metrics reads a dozen rows instead of counting a
-- million on every scrape. Seeded from what is there.
CREATE TABLE deployment_counts (
    state TEXT   PRIMARY KEY,
    n     BIGINT NOT NULL
);
INSERT INTO deployment_counts (state, n) SELECT state, COUNT(*) FROM deployments GROUP BY state;

-- Statement-level with transition tables: a bulk load (COPY, multi-row INSERT) updates each
-- state's row once, not once per deployment. Rows are upserted in state order, so two concurrent
-- opposite changes cannot deadlock on them; a statement that changes no state writes nothing.
CREATE FUNCTION deployment_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO deployment_counts (state, n)
        SELECT state, COUNT(*) FROM new_rows GROUP BY state ORDER BY state
        ON CONFLICT (state) DO UPDATE SET n = deployment_counts.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE deployment_counts c SET n = c.n - o.k FROM (SELECT state, COUNT(*) AS k FROM old_rows GROUP BY state) o WHERE c.state = o.state;
    ELSE
        INSERT INTO deployment_counts (state, n)
        SELECT state, SUM(d) FROM (SELECT state, 1 AS d FROM new_rows UNION ALL SELECT state, -1 AS d FROM old_rows) x
        GROUP BY state HAVING SUM(d) <> 0 ORDER BY state
        ON CONFLICT (state) DO UPDATE SET n = deployment_counts.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_counts_insert AFTER INSERT ON deployments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION deployment_counts_track();
CREATE TRIGGER deployment_counts_update AFTER UPDATE ON deployments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION deployment_counts_track();
CREATE TRIGGER deployment_counts_delete AFTER DELETE ON deployments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION deployment_counts_track();
