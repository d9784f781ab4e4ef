-- The outbox is delivered from its own task, possibly on several replicas at once.
-- recipient: set for a private (ephemeral) reply, which only that user sees and is never edited.
-- rev: bumped by every new text, so a delivery marks a message posted only if the text it sent
--      is still the stored one (a newer text written meanwhile stays pending for another edit).
-- claimed_by / claimed_until: the replica delivering the message and until when; another replica
--      takes the message over only after that, so two replicas never send it at the same time.
-- delivered_at: when the platform last accepted the message (post, edit or ephemeral).
ALTER TABLE chat_messages ADD COLUMN recipient TEXT;
ALTER TABLE chat_messages ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;
ALTER TABLE chat_messages ADD COLUMN claimed_by TEXT;
ALTER TABLE chat_messages ADD COLUMN claimed_until BIGINT;
ALTER TABLE chat_messages ADD COLUMN delivered_at BIGINT;
CREATE INDEX chat_messages_channel_order ON chat_messages (channel, state, id);
