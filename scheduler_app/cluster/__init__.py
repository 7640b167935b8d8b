"""Several processes on one database: one leads (runs the scheduler), the others follow.

`lease` is the lease in the database (on the database's clock), `timing` the pure rules of
when to renew, step down and try again, `elector` the service that holds or seeks the lease and
starts or stops the leader's services, `notify` the wake-ups between processes, `service` what
operators see and ask (GET /admin/cluster, resign).
"""
