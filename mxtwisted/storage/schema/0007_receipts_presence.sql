-- Schema version 7: receipts and presence (Client-Server API "Receipts", "Presence").
--
-- Both are positioned on their own stream for /sync: stream_id is allocated by
-- the writer (mxtwisted.storage.streams), not by the database.

-- The latest receipt of each (room, receipt type, user, thread). thread_id is ''
-- for an unthreaded receipt (so it can be part of the primary key), 'main' or a
-- thread root's event ID otherwise. event_stream_ordering is the receipted
-- event's position on the events stream: a receipt only ever moves forward.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream_ordering BIGINT NOT NULL,
    -- The receipt's data as JSON, e.g. {"ts": 1661384801651}.
    data TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);
CREATE INDEX receipts_stream ON receipts (stream_id);

-- The last presence state of each local user that has one.
CREATE TABLE presence (
    user_id TEXT NOT NULL PRIMARY KEY,
    -- online, unavailable or offline.
    state TEXT NOT NULL,
    status_msg TEXT,
    -- Milliseconds since the epoch; 0 when never active.
    last_active_ts BIGINT NOT NULL,
    last_user_sync_ts BIGINT NOT NULL,
    currently_active SMALLINT NOT NULL,
    stream_id BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);
CREATE INDEX presence_state ON presence (state);
