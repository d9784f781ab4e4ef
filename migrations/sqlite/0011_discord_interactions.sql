-- Discord answers a command by editing its interaction's deferred response, with the
-- interaction's token (valid 15 minutes). Kept here so that the replica delivering the answer,
-- or the process handling the command after a restart, can use it.
CREATE TABLE discord_interactions (
    interaction_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX discord_interactions_received ON discord_interactions (received_at);
