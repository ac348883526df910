"""User schedules: cron, interval and one-off fires, delivered by the elected leader at least once."""
