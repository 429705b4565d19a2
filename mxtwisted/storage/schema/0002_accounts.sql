-- Schema version 2: accounts, devices, tokens, profiles, account data, UIA.
--
-- Booleans are SMALLINT 0/1 so that both engines return the same type.
-- Timestamps are milliseconds since the epoch (BIGINT).
-- Tokens are never stored: only the SHA-256 hex digest of each token is.

CREATE TABLE users (
    user_id TEXT NOT NULL PRIMARY KEY,
    password_hash TEXT,
    created_ts BIGINT NOT NULL,
    is_guest SMALLINT NOT NULL DEFAULT 0,
    admin SMALLINT NOT NULL DEFAULT 0,
    deactivated SMALLINT NOT NULL DEFAULT 0,
    user_type TEXT
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    last_seen_user_agent TEXT,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE access_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT,
    created_ts BIGINT NOT NULL,
    -- NULL: does not expire (non-refreshable token).
    valid_until_ts BIGINT,
    -- The refresh token issued with this access token, if any.
    refresh_token_hash TEXT
);
CREATE INDEX access_tokens_user_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- NULL: does not expire.
    expiry_ts BIGINT
);
CREATE INDEX refresh_tokens_user_device ON refresh_tokens (user_id, device_id);

-- Short-lived single-use tokens for m.login.token (SSO, /login/get_token).
CREATE TABLE login_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    expiry_ts BIGINT NOT NULL,
    auth_provider_id TEXT
);

-- Tokens an admin creates for m.login.registration_token.
CREATE TABLE registration_tokens (
    token TEXT NOT NULL PRIMARY KEY,
    -- NULL: unlimited.
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    -- NULL: never expires.
    expiry_time BIGINT
);

-- User-interactive authentication sessions (server-side, they expire).
CREATE TABLE ui_auth_sessions (
    session_id TEXT NOT NULL PRIMARY KEY,
    creation_ts BIGINT NOT NULL,
    uri TEXT NOT NULL,
    method TEXT NOT NULL,
    description TEXT NOT NULL,
    -- JSON: the request body of the first request (minus "auth").
    clientdict TEXT NOT NULL,
    -- JSON: server-side values kept across the session (e.g. the registration token used).
    serverdict TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE ui_auth_session_stages (
    session_id TEXT NOT NULL,
    stage_type TEXT NOT NULL,
    -- JSON: what the stage established (e.g. the user ID for m.login.password).
    result TEXT NOT NULL,
    PRIMARY KEY (session_id, stage_type)
);

-- Profile fields (displayname, avatar_url and custom fields), one row per field; value is JSON.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field_name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field_name)
);

-- Global account data has room_id ''. stream_id orders changes for /sync.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_id);

CREATE TABLE room_tags (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, tag)
);
