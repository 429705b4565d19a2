-- Schema version 1: the foundation.
--
-- server_info: server-wide facts as key/value pairs, e.g. 'server_name',
-- recorded on first start so that the database can never be reused under a
-- different server_name (every stored user ID, room alias and signature
-- embeds it).
CREATE TABLE server_info (
    key TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
