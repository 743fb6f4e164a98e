-- Several hosts on one database (SPEC 12): each host holds a lease that it renews; each
-- session row names the host that owns it and a fencing epoch that every claim increments.
CREATE TABLE hosts (
    -- A fresh id per process and per lost lease: a lease that lapsed never comes back.
    host_id     TEXT PRIMARY KEY,
    -- Where peers forward requests for this host's sessions (the plugin's base URL).
    address     TEXT,
    -- The machine's boot id: a host that starts again on the same machine ends what a
    -- killed predecessor there left running (programs that ignored the hangup).
    machine     TEXT,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The database's clock decides: no host compares its own clock with another's.
    lease_until TIMESTAMPTZ NOT NULL
);

ALTER TABLE sessions
    ADD COLUMN owner_host  TEXT,
    ADD COLUMN owner_epoch BIGINT NOT NULL DEFAULT 0;

CREATE INDEX sessions_owner_host ON sessions (owner_host);
