"""gradserve's wire API: generated protobuf and gRPC code, and numpy <-> Tensor conversion."""
