"""The Client-Server API endpoints, one module per API area."""

#: The prefixes every Client-Server endpoint is served under (r0 for older clients).
CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
