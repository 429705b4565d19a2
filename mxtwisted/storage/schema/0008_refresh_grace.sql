-- Schema version 8: refresh-token rotation with the spec's grace period.
--
-- Spec (Client-Server API, "Refreshing access tokens"): the old refresh token stays valid until the new access
-- token or the new refresh token is first used. next_token_hash links a refresh token to its successor;
-- access_tokens.used records the first use of an access token issued by a refresh.
ALTER TABLE refresh_tokens ADD COLUMN next_token_hash TEXT;
ALTER TABLE access_tokens ADD COLUMN used SMALLINT NOT NULL DEFAULT 0;
CREATE INDEX refresh_tokens_next ON refresh_tokens (next_token_hash);
