"""Where keys live: partitions, the ring, preference lists, the cluster spec."""
