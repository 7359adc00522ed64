"""The runs the fault matrix kills things around: one agent per shape of run, and what each must end as.

- `commit`: writes a file, works a little, ends; the runner commits and pushes → `succeeded`, one commit.
- `fail`: works past its step limit → `failed`, nothing pushed; never retried into a success.
- `approval`: asks before a command; the harness approves after the kill → `succeeded`, one commit.
- `timeout`: works past its wall-clock limit → `timed_out`, nothing pushed.
- `cancel`: works long; cancelled while the target is dead → `cancelled`, nothing pushed.
- `goal`: a meta session plans two children under a budget → the goal `done`, every run `succeeded`,
  each child's work one commit, no child planned twice."""

from dataclasses import dataclass

AGENT = {"commit": "fault-writer", "fail": "fault-failer", "approval": "fault-asker", "timeout": "fault-sleeper"}
AGENT["cancel"] = "fault-cancelled"
VERDICT = {
    "commit": "succeeded",
    "fail": "failed",
    "approval": "succeeded",
    "timeout": "timed_out",
    "cancel": "cancelled",
    "goal": "succeeded",
}
COMMITS = {"commit": 1, "fail": 0, "approval": 1, "timeout": 0, "cancel": 0}
TASK_STATUS = {"succeeded": "done", "failed": "failed", "timed_out": "failed", "cancelled": "cancelled"}

# Writes a file (the same content in every attempt), works a little, ends; the runner commits and pushes.
WRITER = """
steps:
  - tool_calls:
      - name: write_file
        args: {path: "result.txt", content: "the work\\n"}
  - tool_calls:
      - name: run_command
        args: {cmd: "sleep 2"}
  - say: "done"
"""
# Three steps where two are allowed: the run fails at its third, whatever attempt it is.
FAILER = """
steps:
  - tool_calls: [{name: write_file, args: {path: "half.txt", content: "half the work\\n"}}]
  - tool_calls: [{name: run_command, args: {cmd: "sleep 2"}}]
  - tool_calls: [{name: write_file, args: {path: "never.txt", content: "never\\n"}}]
  - say: "never reached"
"""
APPROVED_FILE = "approved.txt"  # what the approved command makes: absent when the approval was denied or expired
ASKER = f"""
steps:
  - tool_calls: [{{name: run_command, args: {{cmd: "touch {APPROVED_FILE}"}}}}]
  - tool_calls: [{{name: write_file, args: {{path: "after.txt", content: "went on\\n"}}}}]
  - say: "done"
"""


def sleeper(seconds: int) -> str:
    return f"""
steps:
  - tool_calls: [{{name: write_file, args: {{path: "slept.txt", content: "slept\\n"}}}}]
  - tool_calls: [{{name: run_command, args: {{cmd: "sleep {seconds}"}}}}]
  - say: "woke up"
"""


PLANNER = """
steps:
  - tool_calls:
      - {name: spawn_child, args: {title: "Write child-a", target_files: [child-a.txt], agent: fault-child}}
      - {name: spawn_child, args: {title: "Write child-b", target_files: [child-b.txt], agent: fault-child}}
  - tool_calls: [{name: finish, args: {summary: "planned two children"}}]
"""
CHILD = """
steps:
  - tool_calls: [{name: write_file, args: {path: "{{target_file}}", content: "hello\\n"}}]
  - tool_calls: [{name: run_command, args: {cmd: "sleep 2"}}]
  - tool_calls: [{name: finish, args: {summary: "wrote {{target_file}}"}}]
"""
TOOLS = ["write_file", "run_command", "note", "finish"]
SLEEP = {"commands": {"allow": ["sleep *"], "default": "deny"}}


@dataclass(frozen=True)
class Agent:
    name: str
    script: str
    tools: list[str]
    permissions: dict
    limits: dict | None = None
    delegates_to: tuple[str, ...] = ()  # agents that may do more than it, named so it may hand them children


AGENTS = [
    Agent("fault-writer", WRITER, TOOLS, SLEEP),
    Agent("fault-failer", FAILER, TOOLS, SLEEP, {"max_steps": 2}),
    Agent("fault-asker", ASKER, TOOLS, {"commands": {"allow": ["sleep *"], "default": "ask"}}),
    # Its own wall clock ends it, mid-sleep; a retried attempt has a clock of its own and ends the same way.
    Agent("fault-sleeper", sleeper(30), TOOLS, SLEEP, {"wall_clock_s": 6}),
    Agent("fault-cancelled", sleeper(40), TOOLS, SLEEP),
    Agent("fault-child", CHILD, TOOLS, SLEEP),  # before its planner, which names it
    Agent("fault-planner", PLANNER, ["spawn_child", "note", "finish"], {}, delegates_to=("fault-child",)),
]


def agent_body(a: Agent) -> dict:
    body = {
        "name": a.name,
        "system_prompt": "You do what the script says.",
        "tools": a.tools,
        "permissions": {"can_commit": True, "can_merge": False, **a.permissions},
        "llm": {"provider": "scripted", "script": a.script},
    }
    if a.limits:
        body["limits"] = a.limits
    if a.delegates_to:
        body["delegates_to"] = list(a.delegates_to)
    return body
