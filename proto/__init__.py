"""gradserve's wire API: generated protobuf and gRPC code, and numpy <-> Tensor conversion."""

#: Trailing metadata in which a server names the process that answered ("host:pid"), so a client
#: behind a load balancer can tell replicas apart.
REPLICA_KEY = "gradserve-replica"


def message_size_options(max_bytes: int) -> list[tuple[str, int]]:
    """Channel and server options that let messages of up to ``max_bytes`` through, both ways."""
    return [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]
