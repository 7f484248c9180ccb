"""Typed errors raised by library code; `orchestrator.commands.cli` maps them to exit codes and one line."""


class OrchestratorError(Exception):
    """Base class: anything the user should see as one line, with an exit code."""

    exit_code = 1


class InputError(OrchestratorError):
    """Bad input, bad usage, or an output directory that holds another run's state (exit 2)."""

    exit_code = 2


class ClassifierError(InputError):
    """A classifier file that cannot be loaded safely or does not fit the embeddings (exit 2)."""


class ServerUnavailable(OrchestratorError):
    """The Triton server is unreachable, not ready, or lacks a model (exit 3)."""

    exit_code = 3


class TLSProblem(ServerUnavailable):
    """A server reached over the network that refuses this client's TLS setup (exit 3)."""


class Interrupted(OrchestratorError):
    """SIGINT (exit 130) or SIGTERM (exit 143); finished work is kept."""

    def __init__(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}; finished work is kept, rerun to resume")
        self.exit_code = 128 + signum
