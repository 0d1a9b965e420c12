"""Who is up: phi accrual failure detection and the heartbeat loop that feeds it."""
