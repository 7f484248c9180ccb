"""The replay log: a real fault run's `--debug-dispatch` log replays into a fresh core with the same
actions; a file that is not a replay log gets one line and exit 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from dispatch_script import DNA, settings, started
from predict_fixtures import (
    crash,
    outputs_of,
    predict_args,
    start_predict,
    stderr_of,
    wait_for_window,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)

from orchestrator.embed.dispatch import (
    BUSY,
    FAILED,
    OK,
    Identity,
    Policy,
    Reply,
    Request,
    Send,
    Start,
    StartEndpoint,
    Submit,
    Tick,
)
from orchestrator.embed.dispatch.replay import Recorder, main
from orchestrator.embed.triton.server import TritonServer


def replay(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(path)], out, err)
    return code, out.getvalue(), err.getvalue()


def scripted_log(path: Path) -> Path:
    """A log of a scripted run with a failover and a re-admission, written as the client does."""
    recorder = Recorder(str(path))
    core, start_actions = started({"a": 2, "b": 2}, Policy(), seed=11)
    recorder.header(core.setup, core.policy, 11)
    recorder.write(0.0, Start((StartEndpoint("a", settings(2)), StartEndpoint("b", settings(2)))),
                   start_actions)

    def feed(now: float, event) -> list:
        actions = core.handle(now, event)
        recorder.write(now, event, actions)
        return actions

    sends = [a for a in feed(0.1, Submit(0, tuple(Request(i, DNA, 3) for i in range(4))))
             if isinstance(a, Send)]
    feed(0.2, Reply(sends[0].token, BUSY, "queue full"))  # the jitter comes from the seed
    feed(0.3, Reply(sends[1].token, FAILED, "socket closed"))
    for s in sends[2:]:
        feed(0.4, Reply(s.token, OK))
    feed(5.0, Tick())
    ep = core.endpoints[sends[1].url]
    feed(6.0, Identity(ep.url, ep.epoch, settings(2)))
    for token in list(core.outstanding):
        feed(6.5, Reply(token, OK))
    recorder.close()
    return path


def test_a_scripted_log_replays_with_the_same_actions(tmp_path):
    log = scripted_log(tmp_path / "d.jsonl")
    code, out, err = replay(log)
    assert (code, err) == (0, "")
    assert out.strip().endswith("every one took the logged actions")


def test_a_log_whose_actions_differ_is_reported_with_exit_1(tmp_path):
    log = scripted_log(tmp_path / "d.jsonl")
    lines = log.read_text().splitlines()
    record = json.loads(lines[2])
    record["actions"] = record["actions"][:-1]
    lines[2] = json.dumps(record)
    log.write_text("\n".join(lines) + "\n")
    code, out, _ = replay(log)
    assert code == 1 and out.startswith("line 3: logged")


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty"),
    ("hello\n", "line 1: not JSON"),
    ('{"format": "other"}\n', "not a dispatch log"),
    ('{"format": "virnucpro-dispatch-log", "version": 99}\n', "version 99"),
    ('{"format": "virnucpro-dispatch-log", "version": 1}\n', "line 1: a broken header"),
    (None, "line 3: cut short"),
    (None, "line 2: not an event"),
])
def test_a_file_that_is_not_a_replay_log_gets_one_line_and_exit_2(tmp_path, text, says):
    path = tmp_path / "bad.jsonl"
    if text is None:
        good = scripted_log(tmp_path / "good.jsonl").read_text().splitlines(keepends=True)
        text = ("".join(good[:2]) + good[2][:-10] if "cut" in says
                else good[0] + '{"t": 1.0, "event": {"type": "Nope"}, "actions": []}\n')
    path.write_text(text)
    code, out, err = replay(path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and says in err and str(path) in err


def test_replay_usage_and_an_unreadable_file_exit_2(tmp_path):
    err = io.StringIO()
    assert main([], io.StringIO(), err) == 2 and err.getvalue().startswith("usage:")
    code, _, err_text = replay(tmp_path / "missing.jsonl")
    assert code == 2 and "cannot read it" in err_text


def test_recorder_says_when_it_cannot_write(tmp_path):
    from orchestrator.errors import InputError

    with pytest.raises(InputError, match="cannot write it"):
        Recorder(str(tmp_path / "no" / "such" / "dir.jsonl"))


@pytest.mark.server
@pytest.mark.slow
def test_a_real_fault_run_replays_into_a_fresh_core_with_the_same_actions(tmp_path):
    """Two servers, one killed mid-run (SIGKILL): the run finishes on the other; its log, fed to a
    fresh core, gives every logged action again."""
    # 16 windows of 16 frames at 0.3 s a request: the run goes on for seconds after the kill, so
    # the client notices it (a failed request or unanswered liveness checks) however the threads
    # are scheduled; with 4 windows the run could end first on one core
    fasta = write_coding_fasta(tmp_path / "in.fa", records=64, length=2000, seed=5)
    clf = write_toy_classifier(tmp_path / "clf.safetensors")
    out, log = tmp_path / "o", tmp_path / "dispatch.jsonl"
    with ExitStack() as stack:
        servers = [stack.enter_context(TritonServer(write_toy_repository(
            tmp_path / f"repo{i}", delay=0.3))) for i in range(2)]
        proc = start_predict([*predict_args(fasta, clf, *(s.grpc_url for s in servers)),
                              "-o", str(out), "--debug-dispatch", str(log)])
        wait_for_window(proc, out)
        crash(servers[1])
        err = stderr_of(proc)
    assert proc.returncode == 0, err
    assert outputs_of(out)
    kinds = {json.loads(line)["event"]["type"] for line in log.read_text().splitlines()[1:]}
    assert {"Start", "Submit", "Reply"} <= kinds
    actions = [a["type"] for line in log.read_text().splitlines()[1:]
               for a in json.loads(line)["actions"]]
    assert "Connect" in actions  # the killed server was marked down and probed
    proc = subprocess.run([sys.executable, "-m", "orchestrator.embed.dispatch.replay", str(log)],
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stdout
    assert proc.stdout.strip().endswith("every one took the logged actions")
