-- Triggers (events, schedules, webhooks): what the scheduler and the webhook route keep.
-- Everything belongs to an installation and goes with it.

-- The latest instant dealt with, per installation and cron expression (only moves forward).
CREATE TABLE trigger_schedule_cursors (
  installation_id UUID NOT NULL REFERENCES installations(id) ON DELETE CASCADE,
  schedule TEXT NOT NULL,
  last_instant TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (installation_id, schedule)
);

-- One webhook secret per installation (a secret: never listed, logged or audited).
CREATE TABLE trigger_webhook_secrets (
  installation_id UUID PRIMARY KEY REFERENCES installations(id) ON DELETE CASCADE,
  secret TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Delivery ids received, per installation: a second one is a replay.
CREATE TABLE trigger_webhook_deliveries (
  installation_id UUID NOT NULL REFERENCES installations(id) ON DELETE CASCADE,
  delivery_id TEXT NOT NULL CHECK (length(delivery_id) BETWEEN 1 AND 128),
  received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (installation_id, delivery_id)
);
