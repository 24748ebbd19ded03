"""The rpc room: everything that imports grpc. Servicers, interceptors, status mapping, authentication and the
server builder, each converting to and from the service room."""
