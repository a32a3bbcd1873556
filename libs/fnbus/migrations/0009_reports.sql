-- Email reports (docs/observability.md, "Email reports"): settings per account, and one
-- row per report or alert sent, claimed before sending so a period is mailed at most once
-- whichever scheduler instance gets there first, across restarts and failover.

CREATE TABLE report_settings (
    account_id            text PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    recipients            text[] NOT NULL DEFAULT '{}',
    frequency             text NOT NULL DEFAULT 'off'
                          CHECK (frequency IN ('daily', 'weekly', 'off')),
    -- the failure-rate alert; all three NULL = no alert
    alert_failure_rate    double precision CHECK (alert_failure_rate BETWEEN 0 AND 1),
    alert_window_minutes  integer CHECK (alert_window_minutes > 0),
    alert_min_invocations integer CHECK (alert_min_invocations > 0),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE report_sends (
    account_id  text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    -- 'daily:2026-12-03', 'weekly:2026-W49', 'alert:<lambda id>:<window start, epoch s>'
    period      text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,               -- NULL: claimed, then the send failed or died
    recipients  text[] NOT NULL DEFAULT '{}',
    error       text,
    PRIMARY KEY (account_id, period)
);
