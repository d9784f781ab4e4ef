-- deploybot schema (SQLite). Times are Unix milliseconds (UTC). History is never deleted.

CREATE TABLE deployments (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    env               TEXT    NOT NULL,
    kind              TEXT    NOT NULL,              -- deploy | rollback
    version           TEXT    NOT NULL,              -- the version being put in place
    services          TEXT    NOT NULL,              -- JSON array of service names
    state             TEXT    NOT NULL,
    requested_by      TEXT    NOT NULL,
    requested_by_name TEXT    NOT NULL,
    channel           TEXT    NOT NULL,
    hotfix_reason     TEXT,
    scheduled_for     BIGINT,                        -- --at: when it may start
    rollback_of       BIGINT REFERENCES deployments(id),
    with_db           INTEGER NOT NULL DEFAULT 0,
    approvals_required INTEGER NOT NULL DEFAULT 0,
    approval_expires_at BIGINT,
    current_step      TEXT,
    cancel_requested_by TEXT,                        -- /cancel of a running job: stop at the next safe point
    issues            TEXT,                          -- what went wrong, for the history
    error             TEXT,
    lease_owner       TEXT,
    lease_until       BIGINT,
    rev               INTEGER NOT NULL DEFAULT 0,    -- bumped on every transition
    created_at        BIGINT  NOT NULL,
    started_at        BIGINT,
    failed_at         BIGINT,                        -- when the failure was detected (MTTR)
    finished_at       BIGINT,
    updated_at        BIGINT  NOT NULL
);
CREATE INDEX deployments_env_created ON deployments (env, created_at);
CREATE INDEX deployments_state ON deployments (state);

-- Per service of a deployment: what ran before (exactly, for rollback) and what it put in place.
CREATE TABLE deployment_services (
    deployment_id BIGINT NOT NULL REFERENCES deployments(id),
    service       TEXT   NOT NULL,
    from_version  TEXT,
    from_ref      TEXT,                              -- target-specific: task definition ARN, image id, …
    to_version    TEXT   NOT NULL,
    to_ref        TEXT,
    state         TEXT   NOT NULL DEFAULT 'pending', -- pending | deployed | rolled_back | failed
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, service)
);

CREATE TABLE deployment_steps (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id BIGINT NOT NULL REFERENCES deployments(id),
    seq           INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    attempt       INTEGER NOT NULL DEFAULT 1,
    state         TEXT    NOT NULL,                  -- running | succeeded | failed | skipped | interrupted
    detail        TEXT,
    started_at    BIGINT  NOT NULL,
    finished_at   BIGINT,
    UNIQUE (deployment_id, name, attempt)
);

CREATE TABLE approvals (
    deployment_id BIGINT NOT NULL REFERENCES deployments(id),
    user_id       TEXT   NOT NULL,
    user_name     TEXT   NOT NULL,
    vote          TEXT   NOT NULL,                   -- approve | reject
    created_at    BIGINT NOT NULL,
    withdrawn_at  BIGINT,
    PRIMARY KEY (deployment_id, user_id, vote)
);

CREATE TABLE locks (
    env           TEXT PRIMARY KEY,
    kind          TEXT   NOT NULL,                   -- manual | deployment
    holder        TEXT   NOT NULL,
    reason        TEXT   NOT NULL,
    deployment_id BIGINT REFERENCES deployments(id),
    created_at    BIGINT NOT NULL
);

-- Every message the bot sends is written here first (outbox) and marked posted with its
-- platform id; deployments and alerts find their message to edit here.
CREATE TABLE chat_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT   NOT NULL UNIQUE,            -- idempotency key, e.g. deployment:42:progress
    channel       TEXT   NOT NULL,
    thread_key    TEXT,                              -- key of the message this one replies to
    deployment_id BIGINT REFERENCES deployments(id),
    alert_id      BIGINT,
    purpose       TEXT   NOT NULL,                   -- progress | approval | thread | alert | reply | summary
    body          TEXT   NOT NULL,                   -- JSON of the rendered message
    platform_id   TEXT,                              -- Slack ts, Discord message id, console number
    state         TEXT   NOT NULL,                   -- pending | posted | failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX chat_messages_state ON chat_messages (state, next_attempt_at);
CREATE INDEX chat_messages_platform ON chat_messages (channel, platform_id);

CREATE TABLE processed_events (
    event_id    TEXT PRIMARY KEY,
    source      TEXT   NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint   TEXT   NOT NULL UNIQUE,
    env           TEXT,
    deployment_id BIGINT REFERENCES deployments(id),
    name          TEXT   NOT NULL,
    status        TEXT   NOT NULL,                   -- firing | resolved
    source        TEXT   NOT NULL,                   -- alertmanager | watch | probe
    labels        TEXT   NOT NULL,
    annotations   TEXT   NOT NULL,
    starts_at     BIGINT NOT NULL,
    ends_at       BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE schedules (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT   NOT NULL,                   -- deploy | probe | digest | approval_expiry
    key           TEXT   NOT NULL UNIQUE,
    env           TEXT,
    deployment_id BIGINT REFERENCES deployments(id),
    cron          TEXT,
    next_run_at   BIGINT NOT NULL,
    last_run_at   BIGINT,
    enabled       INTEGER NOT NULL DEFAULT 1,
    lease_owner   TEXT,
    lease_until   BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX schedules_due ON schedules (enabled, next_run_at);

CREATE TABLE backups (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id BIGINT NOT NULL REFERENCES deployments(id),
    env           TEXT   NOT NULL,
    local_path    TEXT,
    remote_uri    TEXT,
    size_bytes    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- What runs where, as the bot last put it in place.
CREATE TABLE service_versions (
    env           TEXT   NOT NULL,
    service       TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    ref           TEXT,
    deployment_id BIGINT REFERENCES deployments(id),
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (env, service)
);

CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            BIGINT NOT NULL,
    actor         TEXT   NOT NULL,
    action        TEXT   NOT NULL,
    env           TEXT,
    deployment_id BIGINT,
    detail        TEXT
);
CREATE INDEX audit_log_deployment ON audit_log (deployment_id);
