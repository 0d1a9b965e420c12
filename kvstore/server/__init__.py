"""The server processes (storage node, coordinator) and what they own: config,
metrics, logs, the coordinator's cache."""
