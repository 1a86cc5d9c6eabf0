-- The uid that asked for each deploy, beside the name it is recorded under: the control
-- socket's peer (SO_PEERCRED), or the process that deployed in-process. NULL for rows written
-- before it was recorded.

ALTER TABLE deployments ADD COLUMN uid INTEGER CHECK (uid >= 0);
