"""The gradserve server: layer registry, graph engine, gRPC service and command line."""
