-- Schema version 14: when a room joined with partial state got its full state (a position of the events
-- stream), so that /sync gives its members to clients that do not lazy-load them (the room is then synced as
-- if newly joined: its whole state).

CREATE TABLE partial_state_completions (
    room_id TEXT NOT NULL PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX partial_state_completions_stream ON partial_state_completions (stream_ordering);
