"""The orchestration: the config loader, Prefect tasks and flows (the nightly story), the CLI and what a person
sees (console, summary, report). Calls into ``jobs``; nothing in ``jobs`` imports this package."""
