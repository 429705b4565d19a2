-- Schema version 5: rooms, the event graph, state, membership, aliases.
--
-- events.stream_ordering is the room-independent "events" stream (sync
-- tokens, /messages tokens); it is allocated by the writer, not by the DB.
-- State is kept as state groups: each group is a delta (state_group_edges
-- points at the previous group, state_group_entries holds only the keys that
-- changed), with a full snapshot every so often so a lookup walks a short chain.

CREATE TABLE rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    is_public SMALLINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL
);

CREATE TABLE events (
    stream_ordering BIGINT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    received_ts BIGINT NOT NULL,
    -- The event as JSON (the PDU, without unsigned data we add on the way out).
    json TEXT NOT NULL,
    -- Why the auth rules rejected it (a rejected event is stored but never served).
    rejected_reason TEXT,
    -- An event whose state we do not know (fetched for auth chains over federation).
    outlier SMALLINT NOT NULL DEFAULT 0,
    -- The redacted form replaces json when a redaction applies (redacted_by set).
    redacted_by TEXT,
    -- For state events: the event this one replaced in the room state (for unsigned.prev_content).
    replaces_state TEXT
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_depth ON events (room_id, depth, stream_ordering);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);

-- Server-side data for the sender's device: transaction ID (idempotency, unsigned.transaction_id).
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, room_id, txn_id)
);
CREATE INDEX event_txn_ids_event ON event_txn_ids (event_id);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_id)
);

CREATE TABLE room_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE state_groups (
    id BIGINT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    -- NULL: this group is a full snapshot. Otherwise entries are a delta on prev_group.
    prev_group BIGINT,
    -- Number of delta groups between this one and its snapshot (bounds lookups).
    chain_length INTEGER NOT NULL
);

CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    -- NULL in a delta: the key was removed (never happens in Matrix state, kept for completeness).
    event_id TEXT,
    PRIMARY KEY (state_group, type, state_key)
);

-- The state after each (non-outlier) event: its group.
CREATE TABLE event_to_state_groups (
    event_id TEXT NOT NULL PRIMARY KEY,
    state_group BIGINT NOT NULL
);

-- The room's current state, for fast lookups (members, joined rooms, names).
CREATE TABLE current_state_events (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- For m.room.member: the membership, so members and joined rooms need no JSON parsing.
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state_events (state_key, type, membership);

-- Every membership event, for history visibility and membership at a point in time.
CREATE TABLE room_memberships (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    membership TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    displayname TEXT,
    avatar_url TEXT
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, room_id, stream_ordering);

-- Rooms a local user has forgotten (spec: /forget).
CREATE TABLE room_forgotten (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

CREATE TABLE redactions (
    event_id TEXT NOT NULL PRIMARY KEY,
    redacts TEXT NOT NULL,
    room_id TEXT NOT NULL
);
CREATE INDEX redactions_redacts ON redactions (redacts);

CREATE TABLE room_aliases (
    room_alias TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
