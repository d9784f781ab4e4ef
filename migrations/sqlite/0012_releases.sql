-- /release: one row per release attempt, and the image each service got. A release is written
-- 'running' when it starts and ends 'succeeded' (with its images, in one transaction) or 'failed'
-- (with the failing step's output tail, and no images): nothing is recorded half.
CREATE TABLE releases (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    version            TEXT   NOT NULL,
    ref_name           TEXT   NOT NULL,
    commit_sha         TEXT,
    state              TEXT   NOT NULL,
    requested_by       TEXT   NOT NULL,
    requested_by_name  TEXT   NOT NULL,
    channel            TEXT   NOT NULL,
    error              TEXT,
    notes              TEXT,
    started_at         BIGINT NOT NULL,
    finished_at        BIGINT,
    -- Renewed by the process running the release; a running release past it was abandoned
    -- (its process died) and no longer holds its version.
    alive_until        BIGINT
);
-- At most one release of a version that is running or has succeeded; failed ones may be retried.
CREATE UNIQUE INDEX releases_live_version ON releases (version) WHERE state <> 'failed';
CREATE INDEX releases_version ON releases (version, state);

CREATE TABLE release_images (
    release_id   BIGINT NOT NULL REFERENCES releases(id),
    service      TEXT   NOT NULL,
    image        TEXT   NOT NULL,
    digest       TEXT   NOT NULL,
    build_ms     BIGINT NOT NULL,
    push_ms      BIGINT NOT NULL,
    PRIMARY KEY (release_id, service)
);
