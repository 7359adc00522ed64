"""The run workflow: how runs and tasks move, and what each move asks to happen next.

Transitions (`runs`, `tasks`) store their move and return follow-ups (`followups`): publish these
events, launch this attempt, dispatch this task, notify this parent, let this goal follow its run.
`engine` carries them out and is the one place that composes other features (tasks, budgets,
goals, approvals, sessions' plans); features call it instead of calling each other.
"""
