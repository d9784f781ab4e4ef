-- The bad day: inbound events are stored with their payload before they are acknowledged and
-- handled from the store; a deployment is created at most once per inbound event; a deployment
-- closed by a human (/resolve) or superseded by a roll-forward says so in its history.

ALTER TABLE processed_events ADD COLUMN payload TEXT;               -- JSON of the ChatEvent
ALTER TABLE processed_events ADD COLUMN state TEXT NOT NULL DEFAULT 'handled';  -- pending | handled
ALTER TABLE processed_events ADD COLUMN lease_owner TEXT;           -- the replica handling it
ALTER TABLE processed_events ADD COLUMN lease_until BIGINT;
ALTER TABLE processed_events ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE processed_events ADD COLUMN handled_at BIGINT;
CREATE INDEX processed_events_pending ON processed_events (state, lease_until);

ALTER TABLE deployments ADD COLUMN request_event TEXT;              -- the inbound event that created it
CREATE UNIQUE INDEX deployments_request_event ON deployments (request_event);
ALTER TABLE deployments ADD COLUMN resolution TEXT;                 -- "resolved by …: note" / "superseded by #N"
CREATE INDEX audit_log_actor ON audit_log (actor, id);               -- refusals and actions by person
