-- Schema version 6: user filters (Client-Server API, "Filtering").
--
-- filter_id is a per-user counter, returned to clients as a decimal string
-- (so it never starts with "{", which marks an inline filter). The filter is
-- kept as the JSON the client uploaded; filter_hash (SHA-256 of its canonical
-- JSON) lets an identical upload return the existing ID.

CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    filter_hash TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
CREATE UNIQUE INDEX user_filters_hash ON user_filters (user_id, filter_hash);
