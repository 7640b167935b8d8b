"""The audit log: every operator action (API, command line, dashboard), who did it, its result."""

from scheduler_app.audit.service import CLI_USER_AGENT, Actor, Audit, AuditLog, Outcome

__all__ = ["CLI_USER_AGENT", "Actor", "Audit", "AuditLog", "Outcome"]
