-- API keys of the HTTP API: only the SHA-256 of each key is stored, never the key.
CREATE TABLE api_keys (
    id VARCHAR(64) PRIMARY KEY,
    hash VARCHAR(64) NOT NULL UNIQUE,
    user_id VARCHAR(255) NOT NULL,
    roles TEXT[] NOT NULL DEFAULT '{}',
    name VARCHAR(255) NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    revoked_at TIMESTAMPTZ
);

CREATE INDEX idx_api_keys_user ON api_keys(user_id);
