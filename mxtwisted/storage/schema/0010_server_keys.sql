-- Schema version 10: other servers' signing keys (Server-Server API, "Retrieving server keys").
--
-- One row per (server, key ID). verify_key is the unpadded base64 public key;
-- valid_until_ts is how long we may use it (for a key from old_verify_keys,
-- its expired_ts); fetched_ts is when we got it. key_json is the signed
-- response that carried the key, as received (the origin's own signature
-- included), so that we can serve it again as a notary
-- (/_matrix/key/v2/query) with our signature added.

CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
