-- The lease token of the attempt whose finish or release ended the lease: a worker that repeats
-- such a write after an interrupted commit (connection lost, server restarted) recognises it as
-- already applied instead of reporting its lease lost.
ALTER TABLE tasks ADD COLUMN finished_token UUID;
