"""The service room: operations over plans (sessions, limits, the layer registry, named graphs and their store,
KServe's model view). Stateful, thread-safe, free of gRPC."""
