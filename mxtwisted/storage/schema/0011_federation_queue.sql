-- Schema version 11: the outgoing federation queue (Server-Server API, "Transactions").
--
-- One row per destination server we have sent (or tried to send) events to.
-- last_sent_stream_ordering: every local event up to this stream ordering
-- that the destination should have received has been delivered (or given
-- up); at start-up the sender resends the local events after it, in the rooms
-- the destination shares with us, so nothing queued is lost on a restart.
-- retry_interval_ms / retry_last_ts: the current backoff (0: reachable).

CREATE TABLE federation_destinations (
    destination TEXT NOT NULL PRIMARY KEY,
    last_sent_stream_ordering BIGINT NOT NULL,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval_ms BIGINT NOT NULL DEFAULT 0
);
