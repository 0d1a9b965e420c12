"""Who may call what: identities (peer, admin, client), the cluster secret of
a plaintext development cluster, TLS settings and the certificates a local
cluster issues itself. gRPC-free except `kvstore.rpc.access`, which applies
the policy here to calls."""
