"""gradserve's wire API: generated protobuf and gRPC code, and numpy <-> Tensor conversion."""

#: Trailing metadata in which a server names the process that answered ("host:pid"), so a client
#: behind a load balancer can tell replicas apart.
REPLICA_KEY = "gradserve-replica"
