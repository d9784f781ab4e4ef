-- Notifications of [[notify]] (email, statuspage, webhook) and the history commit of
-- [bot] history_repo: written when a deployment reaches a state, delivered by a task of any
-- replica, like the chat outbox.
-- key: idempotency key "<deployment>:<notifier>:<event>" (notifier: the index in [[notify]], or
--      "history" for the history commit), so a state reached twice or a handler run again never
--      sends twice.
-- payload: what to send, rendered when the row is written (JSON).
-- claimed_by / claimed_until: the replica delivering it and until when.
-- result: what the receiver answered that later rows need (a Statuspage incident id).
CREATE TABLE notifications (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT   NOT NULL UNIQUE,
    deployment_id BIGINT NOT NULL,
    notifier      TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    event         TEXT   NOT NULL,
    payload       TEXT   NOT NULL,
    state         TEXT   NOT NULL DEFAULT 'pending',   -- pending | delivered | failed
    attempts      BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_by    TEXT,
    claimed_until BIGINT,
    result        TEXT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    delivered_at  BIGINT
);
CREATE INDEX notifications_ready ON notifications (state, next_attempt_at);
CREATE INDEX notifications_deployment ON notifications (deployment_id);
