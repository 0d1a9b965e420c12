"""The gRPC edge: servicers, peer links, the server factory, validation and the
one table between the store's errors and gRPC status codes."""
