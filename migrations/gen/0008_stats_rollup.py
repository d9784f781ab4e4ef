#!/usr/bin/env python3
"""Generates migrations/{sqlite,postgres}/0008_stats_rollup.sql: /stats read from per-day
rollups kept by triggers (issue 10). The contribution of one deployment row to the rollups is
written once here and expanded for each trigger and dialect; run it after changing it and
commit both outputs (tests/scale.rs checks the rollups against the rows)."""
import os

DAY = 86400000
HERE = os.path.dirname(os.path.abspath(__file__))

# A row counts in /stats once it ran and finished.
def counts(x):
    return f"{x}.started_at IS NOT NULL AND {x}.finished_at IS NOT NULL"

# A failed change that is restored by the next success (not by its own automatic rollback).
def pairing_failure(x):
    return (f"{x}.kind = 'deploy' AND {x}.state <> 'rolled_back' "
            f"AND ({x}.undone = 1 OR {x}.state IN ('failed', 'rollback_failed', 'interrupted'))")

def detected(x):
    return f"COALESCE({x}.failed_at, {x}.finished_at)"

def success(x):
    return f"{x}.state = 'succeeded' AND {counts(x)}"

def day_columns(x, sgn):
    d = detected(x)
    b = lambda cond: f"{sgn} * (CASE WHEN {cond} THEN 1 ELSE 0 END)"
    restore_ms = (f"{sgn} * (CASE WHEN {x}.kind = 'deploy' AND {x}.state = 'rolled_back' AND {x}.finished_at > {d} THEN {x}.finished_at - {d} "
                  f"WHEN {pairing_failure(x)} AND {x}.restored_at > {d} THEN {x}.restored_at - {d} ELSE 0 END)")
    restores = b(f"({x}.kind = 'deploy' AND {x}.state = 'rolled_back') OR ({pairing_failure(x)} AND {x}.restored_at IS NOT NULL)")
    return [
        ("changes", b(f"{x}.kind = 'deploy'")),
        ("succeeded", b(f"{x}.kind = 'deploy' AND {x}.state = 'succeeded' AND {x}.undone = 0")),
        ("failed", b(f"{x}.kind = 'deploy' AND ({x}.undone = 1 OR {x}.state IN ('failed', 'rolled_back', 'rollback_failed', 'interrupted'))")),
        ("completed", b(f"{x}.kind = 'deploy' AND {x}.state <> 'cancelled'")),
        ("rollbacks", b(f"{x}.kind = 'rollback'")),
        ("restore_ms", restore_ms),
        ("restores", restores),
    ]

DAY_COLS = [c for c, _ in day_columns("x", "1")]

def scopes(x):
    return f"(SELECT {x}.env AS scope UNION ALL SELECT '*' AS scope) s"

def apply_rows(x, sgn, source, where_extra="TRUE", pg=False):
    """Statements adding (sgn = 1) or removing (-1) the rows of `source` (aliased x) to the rollups.
    `source` is a FROM item naming the rows as `x`; scopes are joined per row."""
    cols = day_columns(x, sgn)
    scope_join = f"CROSS JOIN (SELECT 0 AS all_envs UNION ALL SELECT 1) s"
    scope = f"CASE WHEN s.all_envs = 1 THEN '*' ELSE {x}.env END"
    dur = f"({x}.finished_at - {x}.started_at)"
    out = []
    out.append(
        f"INSERT INTO stats_days (scope, day, {', '.join(DAY_COLS)})\n"
        f"    SELECT {scope}, {x}.finished_at / {DAY}, {', '.join(f'SUM({e})' for _, e in cols)}\n"
        f"    FROM {source} {scope_join}\n"
        f"    WHERE {counts(x)} AND {where_extra}\n"
        f"    GROUP BY 1, 2 ORDER BY 1, 2\n"
        f"    ON CONFLICT (scope, day) DO UPDATE SET {', '.join(f'{c} = stats_days.{c} + excluded.{c}' for c in DAY_COLS)}")
    succ = f"{x}.kind = 'deploy' AND {x}.state = 'succeeded' AND {counts(x)} AND {where_extra}"
    out.append(
        f"INSERT INTO stats_durations (scope, minute, day, secs, n)\n"
        f"    SELECT {scope}, {dur} / 60000, {x}.finished_at / {DAY}, {dur} / 1000, SUM({sgn})\n"
        f"    FROM {source} {scope_join}\n"
        f"    WHERE {succ}\n"
        f"    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4\n"
        f"    ON CONFLICT (scope, minute, day, secs) DO UPDATE SET n = stats_durations.n + excluded.n")
    out.append(
        f"INSERT INTO stats_duration_minutes (scope, day, minute, n)\n"
        f"    SELECT {scope}, {x}.finished_at / {DAY}, {dur} / 60000, SUM({sgn})\n"
        f"    FROM {source} {scope_join}\n"
        f"    WHERE {succ}\n"
        f"    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3\n"
        f"    ON CONFLICT (scope, day, minute) DO UPDATE SET n = stats_duration_minutes.n + excluded.n")
    return out

def apply_row(x, sgn):
    """The same as apply_rows for one trigger row (NEW or OLD): plain upserts, one per scope, with
    no FROM, GROUP BY or sort, which per-row triggers on a bulk load cannot afford."""
    cols = day_columns(x, sgn)
    dur = f"({x}.finished_at - {x}.started_at)"
    succ = f"{x}.kind = 'deploy' AND {x}.state = 'succeeded' AND {counts(x)}"
    out = []
    for scope in (f"{x}.env", "'*'"):
        out.append(
            f"INSERT INTO stats_days (scope, day, {', '.join(DAY_COLS)})\n"
            f"    SELECT {scope}, {x}.finished_at / {DAY}, {', '.join(e for _, e in cols)}\n"
            f"    WHERE {counts(x)}\n"
            f"    ON CONFLICT (scope, day) DO UPDATE SET {', '.join(f'{c} = stats_days.{c} + excluded.{c}' for c in DAY_COLS)}")
        out.append(
            f"INSERT INTO stats_durations (scope, minute, day, secs, n)\n"
            f"    SELECT {scope}, {dur} / 60000, {x}.finished_at / {DAY}, {dur} / 1000, {sgn} WHERE {succ}\n"
            f"    ON CONFLICT (scope, minute, day, secs) DO UPDATE SET n = stats_durations.n + excluded.n")
        out.append(
            f"INSERT INTO stats_duration_minutes (scope, day, minute, n)\n"
            f"    SELECT {scope}, {x}.finished_at / {DAY}, {dur} / 60000, {sgn} WHERE {succ}\n"
            f"    ON CONFLICT (scope, day, minute) DO UPDATE SET n = stats_duration_minutes.n + excluded.n")
    return out

RELEVANT = ["kind", "state", "env", "started_at", "finished_at", "failed_at", "undone", "restored_at"]

def changed(cols):
    return " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in cols)

def restore_lookup(x):
    """The first success in x's environment that ended at or after x's detection, not x itself."""
    return (f"(SELECT s.finished_at FROM deployments s WHERE s.env = {x}.env AND s.finished_at >= {detected(x)} "
            f"AND s.state = 'succeeded' AND s.started_at IS NOT NULL AND s.id <> {x}.id ORDER BY s.finished_at LIMIT 1)")

def restore_pending(x):
    """Statements: the success x restores every failure of its environment detected by its end
    that has no earlier restore (through the partial index deployments_unrestored)."""
    base = (f"UPDATE deployments SET restored_at = {x}.finished_at WHERE env = {x}.env AND {pairing_failure('deployments')} "
            f"AND {counts('deployments')} AND id <> {x}.id AND {detected('deployments')} <= {x}.finished_at")
    return [f"{base} AND restored_at IS NULL", f"{base} AND restored_at > {x}.finished_at"]

def undo(x):
    return f"UPDATE deployments SET undone = 1 WHERE id = {x}.rollback_of AND env = {x}.env AND undone = 0"

def undone_already(x):
    """A row written after the /rollback that undid it (a restore, an import): undone at once."""
    return (f"UPDATE deployments SET undone = 1 WHERE id = {x}.id AND undone = 0 AND EXISTS (SELECT 1 FROM deployments r "
            f"WHERE r.rollback_of = {x}.id AND r.env = {x}.env AND r.started_at IS NOT NULL AND r.finished_at IS NOT NULL)")

HEADER = """-- Generated by migrations/gen/0008_stats_rollup.py: edit that, not this.
-- /stats at a million deployments (issue 10): per environment (and '*' for all) per UTC day, the
-- counts, restore sums and duration histograms /stats adds up, kept by triggers on deployments,
-- so a year is a few hundred rollup rows plus the partial first day read from rows.
--
-- Two per-deployment facts make every row's contribution its own:
--   undone      = 1 once a finished /rollback in the same environment names it (rollback_of);
--   restored_at = for a failed change not restored by its own rollback, the end of the first
--                 success in its environment at or after its detection (COALESCE(failed_at,
--                 finished_at)), kept by triggers when either side arrives, in any order.
"""

TABLES = """
ALTER TABLE deployments ADD COLUMN undone INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN restored_at BIGINT;

CREATE TABLE stats_days (
    scope      TEXT   NOT NULL,   -- an environment, or '*' for all of them
    day        BIGINT NOT NULL,   -- finished_at / 86400000 (UTC days)
    changes    BIGINT NOT NULL,
    succeeded  BIGINT NOT NULL,
    failed     BIGINT NOT NULL,
    completed  BIGINT NOT NULL,
    rollbacks  BIGINT NOT NULL,
    restore_ms BIGINT NOT NULL,
    restores   BIGINT NOT NULL,
    PRIMARY KEY (scope, day)
);
-- Successful changes by duration: whole minutes per day (to find the median's minute), whole
-- seconds per minute per day (to find its second: one range of the key).
CREATE TABLE stats_duration_minutes (
    scope  TEXT   NOT NULL,
    day    BIGINT NOT NULL,
    minute BIGINT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (scope, day, minute)
);
CREATE TABLE stats_durations (
    scope  TEXT   NOT NULL,
    minute BIGINT NOT NULL,   -- secs / 60: the median's minute is one range of the key
    day    BIGINT NOT NULL,
    secs   BIGINT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (scope, minute, day, secs)
);
"""

INDEXES = f"""
-- Failures waiting for (or already paired with) a restore, per environment: what a new success
-- restores is a range of this, not a walk of the environment's history.
CREATE INDEX deployments_unrestored ON deployments (env, restored_at)
    WHERE {pairing_failure('deployments').replace('deployments.', '')} AND started_at IS NOT NULL AND finished_at IS NOT NULL;
-- The exact median when its two middle durations fall in different seconds.
CREATE INDEX deployments_success_duration ON deployments ((finished_at - started_at), finished_at, env)
    WHERE kind = 'deploy' AND state = 'succeeded';
"""

def backfill():
    out = [
        "-- What is there already: the two facts, then the rollups, before the triggers exist.",
        f"UPDATE deployments SET undone = 1 WHERE EXISTS (SELECT 1 FROM deployments r WHERE r.rollback_of = deployments.id "
        f"AND r.env = deployments.env AND r.started_at IS NOT NULL AND r.finished_at IS NOT NULL);",
        f"UPDATE deployments SET restored_at = {restore_lookup('deployments')} "
        f"WHERE {pairing_failure('deployments')} AND {counts('deployments')};",
    ]
    out += [s + ";" for s in apply_rows("x", "1", "deployments x")]
    return "\n".join(out) + "\n"

def sqlite():
    out = [HEADER, TABLES, INDEXES, backfill()]
    t = lambda s: "    " + s.replace("\n", "\n    ") + ";"
    # Rollups: remove the old row's contribution, add the new one's.
    out.append("CREATE TRIGGER stats_rollup_insert AFTER INSERT ON deployments\n"
               f"WHEN {counts('NEW')}\nBEGIN\n" + "\n".join(t(s) for s in apply_row("NEW", "1")) + "\nEND;\n")
    cond = changed(RELEVANT).replace("IS DISTINCT FROM", "IS NOT")
    out.append(f"CREATE TRIGGER stats_rollup_update AFTER UPDATE OF {', '.join(RELEVANT)} ON deployments\n"
               f"WHEN {cond}\nBEGIN\n"
               + "\n".join(t(s) for s in apply_row("OLD", "-1") + apply_row("NEW", "1")) + "\nEND;\n")
    out.append("CREATE TRIGGER stats_rollup_delete AFTER DELETE ON deployments\n"
               f"WHEN {counts('OLD')}\nBEGIN\n" + "\n".join(t(s) for s in apply_row("OLD", "-1")) + "\nEND;\n")
    # undone: a finished /rollback marks what it undid.
    fin_rb = f"NEW.rollback_of IS NOT NULL AND {counts('NEW')}"
    out.append(f"CREATE TRIGGER stats_undone_insert AFTER INSERT ON deployments\nWHEN {fin_rb}\nBEGIN\n{t(undo('NEW'))}\nEND;\n")
    out.append(f"CREATE TRIGGER stats_undone_before AFTER INSERT ON deployments\nBEGIN\n{t(undone_already('NEW'))}\nEND;\n")
    out.append(f"CREATE TRIGGER stats_undone_update AFTER UPDATE OF rollback_of, env, started_at, finished_at ON deployments\n"
               f"WHEN {fin_rb}\nBEGIN\n{t(undo('NEW'))}\nEND;\n")
    # restored_at of a failure: the first success already there.
    pf = f"{pairing_failure('NEW')} AND {counts('NEW')}"
    pf_old = f"{pairing_failure('OLD')} AND {counts('OLD')}"
    find = f"UPDATE deployments SET restored_at = {restore_lookup('NEW')} WHERE id = NEW.id"
    out.append(f"CREATE TRIGGER stats_restore_find_insert AFTER INSERT ON deployments\nWHEN {pf}\nBEGIN\n{t(find)}\nEND;\n")
    out.append(f"CREATE TRIGGER stats_restore_find_update AFTER UPDATE OF kind, state, env, started_at, finished_at, failed_at, undone ON deployments\n"
               f"WHEN {pf} AND (NOT COALESCE({pf_old}, 0) OR OLD.env IS NOT NEW.env OR {detected('OLD')} IS NOT {detected('NEW')})\n"
               f"BEGIN\n{t(find)}\nEND;\n")
    # A new success restores the failures waiting for it.
    ok_old = f"OLD.state = 'succeeded' AND {counts('OLD')}"
    out.append(f"CREATE TRIGGER stats_restore_by_insert AFTER INSERT ON deployments\nWHEN {success('NEW')}\nBEGIN\n"
               + "\n".join(t(s) for s in restore_pending("NEW")) + "\nEND;\n")
    out.append(f"CREATE TRIGGER stats_restore_by_update AFTER UPDATE OF state, env, started_at, finished_at ON deployments\n"
               f"WHEN {success('NEW')} AND (NOT COALESCE({ok_old}, 0) OR OLD.env IS NOT NEW.env OR OLD.finished_at IS NOT NEW.finished_at)\nBEGIN\n"
               + "\n".join(t(s) for s in restore_pending("NEW")) + "\nEND;\n")
    return "\n".join(out)

def postgres():
    out = [HEADER, TABLES, INDEXES, backfill()]
    ind = lambda s: "    " + s.replace("\n", "\n    ") + ";"
    # INSERT: statement level, set-wise, so a bulk load is a few statements, not a million.
    body = [ind(s) for s in apply_rows("x", "1", "new_rows x")]
    body.append(ind("UPDATE deployments d SET undone = 1 FROM new_rows r WHERE r.rollback_of = d.id AND r.env = d.env "
                    "AND r.started_at IS NOT NULL AND r.finished_at IS NOT NULL AND d.undone = 0"))
    body.append(ind("UPDATE deployments d SET undone = 1 FROM new_rows n WHERE d.id = n.id AND d.undone = 0 AND EXISTS (SELECT 1 FROM deployments r "
                    "WHERE r.rollback_of = n.id AND r.env = n.env AND r.started_at IS NOT NULL AND r.finished_at IS NOT NULL)"))
    body.append(ind(f"UPDATE deployments SET restored_at = {restore_lookup('deployments')} "
                    f"WHERE id IN (SELECT id FROM new_rows x WHERE {pairing_failure('x')} AND {counts('x')}) "
                    f"AND {pairing_failure('deployments')} AND {counts('deployments')}"))
    # Failures already there that a new success restores earlier than what they have: only those
    # waiting, or paired later than the new rows' first success in their environment, are looked
    # at (deployments_unrestored), each with the same index lookup as above. The new rows' own
    # failures are among them and already right, so they are left unchanged; nothing joins the new
    # rows with themselves (a bulk load is linear).
    body.append(ind(
        f"UPDATE deployments w SET restored_at = {restore_lookup('w')}\n"
        "FROM (SELECT env, MIN(finished_at) AS first FROM new_rows x\n"
        f"      WHERE {success('x')} GROUP BY env) n\n"
        f"WHERE w.env = n.env AND {pairing_failure('w')} AND {counts('w')} AND (w.restored_at IS NULL OR w.restored_at > n.first)\n"
        f"  AND w.restored_at IS DISTINCT FROM {restore_lookup('w')}"))
    out.append("CREATE FUNCTION stats_rollup_insert() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
               + "\n".join(body) + "\n    RETURN NULL;\nEND\n$$;\n")
    out.append("CREATE TRIGGER stats_rollup_insert AFTER INSERT ON deployments\n"
               "    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_rollup_insert();\n")
    # UPDATE: row level, only when something /stats reads changed.
    upd = [ind(s) for s in apply_row("OLD", "-1") + apply_row("NEW", "1")]
    upd.append(f"    IF NEW.rollback_of IS NOT NULL AND {counts('NEW')} THEN\n    {ind(undo('NEW'))}\n    END IF;")
    pf, pf_old = f"{pairing_failure('NEW')} AND {counts('NEW')}", f"{pairing_failure('OLD')} AND {counts('OLD')}"
    upd.append(f"    IF {pf} AND (NOT COALESCE({pf_old}, FALSE) OR OLD.env IS DISTINCT FROM NEW.env "
               f"OR {detected('OLD')} IS DISTINCT FROM {detected('NEW')}) THEN\n"
               f"    {ind(f'UPDATE deployments SET restored_at = {restore_lookup(chr(78)+chr(69)+chr(87))} WHERE id = NEW.id')}\n    END IF;")
    ok_old = f"OLD.state = 'succeeded' AND {counts('OLD')}"
    upd.append(f"    IF {success('NEW')} AND (NOT COALESCE({ok_old}, FALSE) OR OLD.env IS DISTINCT FROM NEW.env "
               f"OR OLD.finished_at IS DISTINCT FROM NEW.finished_at) THEN\n"
               + "\n".join("    " + ind(s) for s in restore_pending("NEW")) + "\n    END IF;")
    out.append("CREATE FUNCTION stats_rollup_update() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
               + "\n".join(upd) + "\n    RETURN NULL;\nEND\n$$;\n")
    out.append("CREATE TRIGGER stats_rollup_update AFTER UPDATE ON deployments FOR EACH ROW\n"
               f"    WHEN ({changed(RELEVANT)}) EXECUTE FUNCTION stats_rollup_update();\n")
    dele = [ind(s) for s in apply_row("OLD", "-1")]
    out.append("CREATE FUNCTION stats_rollup_delete() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
               + "\n".join(dele) + "\n    RETURN NULL;\nEND\n$$;\n")
    out.append("CREATE TRIGGER stats_rollup_delete AFTER DELETE ON deployments FOR EACH ROW EXECUTE FUNCTION stats_rollup_delete();\n")
    return "\n".join(out)

for dialect, text in (("sqlite", sqlite()), ("postgres", postgres())):
    with open(os.path.join(HERE, "..", dialect, "0008_stats_rollup.sql"), "w") as f:
        f.write(text)
