"""Membership: every instance records that it is alive in the `instances` table."""
