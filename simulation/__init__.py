"""A discrete-event simulator of a shared Triton cluster that runs the client's real dispatch core."""
