-- One row per output project: the program it runs and what is needed to run it again.
-- The columns of the SQLite schema (../0001_sessions.sql), in PostgreSQL's types.
CREATE TABLE sessions (
    output_project_id TEXT PRIMARY KEY,
    -- The current (or last) run; every spawn gets a new one. Also the environment marker
    -- that finds the run's processes after a crash.
    session_id        TEXT NOT NULL,
    kind              TEXT NOT NULL,
    argv              JSONB NOT NULL CHECK (jsonb_typeof(argv) = 'array'),  -- without per-spawn flags
    cwd               TEXT NOT NULL,          -- realpath
    claude_session_id TEXT,
    status            TEXT NOT NULL
                      CHECK (status IN ('running', 'idle', 'exited', 'stopped', 'failed')),
    status_reason     TEXT,
    pid               INTEGER,
    pid_start_time    BIGINT,                 -- /proc/<pid>/stat field 22: pids get reused
    exit_code         INTEGER,
    exit_signal       TEXT,
    cols              INTEGER NOT NULL DEFAULT 80,
    rows              INTEGER NOT NULL DEFAULT 24,
    spawn_count       INTEGER NOT NULL DEFAULT 0,
    created_at        DOUBLE PRECISION NOT NULL,  -- epoch seconds, as in SQLite
    updated_at        DOUBLE PRECISION NOT NULL,
    last_activity     DOUBLE PRECISION NOT NULL
);

CREATE INDEX sessions_status ON sessions (status);
