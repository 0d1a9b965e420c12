"""Dynamo-style replication: quorum reads and writes, hinted handoff, read repair,
Merkle anti-entropy and tombstone collection."""
