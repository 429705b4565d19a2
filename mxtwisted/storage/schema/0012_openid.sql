-- Schema version 12: OpenID tokens (Client-Server API "OpenID", Server-Server API "OpenID").
--
-- A token a user hands to a third party, who checks it with our
-- GET /_matrix/federation/v1/openid/userinfo. Stored as a SHA-256 digest like
-- access tokens; valid_until_ts in ms (tokens last an hour). Expired rows are
-- deleted when new tokens are issued.

CREATE TABLE openid_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_valid_until ON openid_tokens (valid_until_ts);
CREATE INDEX openid_tokens_user ON openid_tokens (user_id);
