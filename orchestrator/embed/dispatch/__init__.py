"""The dispatch decisions of a run over many Triton servers, with no I/O (events in, actions out).

`Dispatcher` (core) is driven by `orchestrator.embed.triton.client` over gRPC, by tests with
scripted events, by simulators in simulated time and by `replay` from a `--debug-dispatch` log.
"""

from orchestrator.embed.dispatch.core import Dispatcher, EndpointState, RequestState
from orchestrator.embed.dispatch.events import (
    BUSY,
    ERROR,
    FAILED,
    MALFORMED,
    OK,
    REJECTED,
    UNAVAILABLE,
    Action,
    Cancel,
    CheckLive,
    Close,
    Connect,
    Deliver,
    Event,
    Fail,
    Finished,
    Identity,
    Listed,
    Liveness,
    Log,
    Marked,
    Reply,
    Request,
    RunSetup,
    Send,
    Start,
    StartEndpoint,
    Submit,
    Tick,
    Unreachable,
)
from orchestrator.embed.dispatch.identity import ModelSettings, model_differences, pin_versions
from orchestrator.embed.dispatch.policy import Policy

__all__ = [
    "BUSY", "ERROR", "FAILED", "MALFORMED", "OK", "REJECTED", "UNAVAILABLE", "Action", "Cancel",
    "CheckLive", "Close", "Connect", "Deliver", "Dispatcher", "EndpointState", "Event", "Fail",
    "Finished", "Identity", "Listed", "Liveness", "Log", "Marked", "ModelSettings", "Policy",
    "Reply", "Request", "RequestState", "RunSetup", "Send", "Start", "StartEndpoint", "Submit",
    "Tick", "Unreachable", "model_differences", "pin_versions",
]
