-- Schema version 9: push rules (Client-Server API "Push Notifications", "Push Rules").
--
-- The server-default rules (IDs starting with a dot) are not stored: they are data in mxtwisted.push.rules.
-- Only what a user changed is stored: their own rules, and their settings of default rules.

-- The user's own rules. Within a (user, kind), a higher priority is a more important rule; priorities need
-- not be contiguous or unique while rules are being moved (there is deliberately no unique index on them).
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    -- override, content, room, sender or underride.
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority BIGINT NOT NULL,
    -- JSON array of conditions: override and underride rules only (NULL otherwise).
    conditions TEXT,
    -- The glob pattern: content rules only (NULL otherwise).
    pattern TEXT,
    -- JSON array of actions.
    actions TEXT NOT NULL,
    enabled SMALLINT NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
);
CREATE INDEX push_rules_priority ON push_rules (user_id, kind, priority);

-- A user's settings of server-default rules; NULL keeps the server's value.
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled SMALLINT,
    -- JSON array of actions.
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);
