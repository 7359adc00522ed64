"""Schedules: recurring goals and tasks on cron expressions with time zones."""
