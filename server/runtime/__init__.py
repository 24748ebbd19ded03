"""The runtime room: concerns of the server process. Memory cap, malloc tuning, BLAS threads, worker processes,
logging and metrics."""
