"""The engine room: graph specs, validation and compilation into plans, forward/backward, gradient checks, shape
inference and their errors. numpy and gradserve.plugins only: no gRPC, no threads."""
