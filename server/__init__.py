"""The gradserve server, in rooms whose arrows point one way: cli -> rpc -> runtime -> service -> engine.

engine   numpy only: graph specs, plans, forward/backward, gradient checks, shape inference
service  state over plans, no gRPC: sessions, limits, layer registry, named graphs and their store
runtime  the process: memory cap, malloc, BLAS threads, workers, logging, metrics
rpc      everything that imports grpc: servicers, interceptors, status mapping, auth, the server builder
cli      the `gradserve` command above them all
"""
