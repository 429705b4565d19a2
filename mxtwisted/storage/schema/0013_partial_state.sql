-- Schema version 13: rooms joined with partial state (Server-Server API send_join ``omit_members``).
--
-- A room is here from the moment our join with partial state (its state without most member events) is
-- stored until the full state at the join was fetched and put in place; ``servers`` is the resident
-- servers' list (``servers_in_room``, JSON) that stands in for the member list meanwhile. Rows left by a
-- stop are resumed at start-up.

CREATE TABLE partial_state_rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    join_event_id TEXT NOT NULL,
    servers TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
