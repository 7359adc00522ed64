"""The first messages of a run: the agent's prompt, its skills and memory, and the task."""

from nexus.events.payloads import RunConfig

TOOL_RULES = (
    "You act only through the tools you are given; every call is checked and recorded. "
    "Paths are relative to the repository root. Call `finish` with a short summary when the task is done."
)


def system_message(cfg: RunConfig) -> str:
    parts = [cfg.system_prompt.strip(), TOOL_RULES]
    for i, skill in enumerate(cfg.skills, 1):
        parts.append(f"## Skill {i}\n{skill.strip()}")
    if cfg.memory:
        parts.append("## What you remember\n" + "\n".join(f"- {m.strip()}" for m in cfg.memory))
    return "\n\n".join(parts)


def task_message(cfg: RunConfig) -> str:
    if cfg.task is None:
        return "Do the task you were given."
    text = f"# Task: {cfg.task.title}\n\n{cfg.task.description}".strip()
    if cfg.task.target_files:
        text += "\n\nTarget files: " + ", ".join(cfg.task.target_files)
    return text


def variables(cfg: RunConfig) -> dict[str, str]:
    """What a scripted provider may fill into `{{name}}` placeholders."""
    target = cfg.task.target_files[0] if cfg.task and cfg.task.target_files else ""
    return {
        "run_id": cfg.run_id,
        "agent_id": cfg.agent_id,
        "task_id": cfg.task_id,
        "session_id": cfg.session_id,
        "parent_session_id": cfg.parent_session_id or "",
        "task_title": cfg.task.title if cfg.task else "",
        "target_file": target,
        "branch": cfg.repo.branch if cfg.repo else "",
    }
