-- A progress message is rendered by whichever replica or task changed the deployment; renders can
-- reach the outbox out of order. Each carries how far the deployment had got when it was read
-- (its rev and its steps), and an older render never replaces a newer one.
ALTER TABLE chat_messages ADD COLUMN source_rev BIGINT;
