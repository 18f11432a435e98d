"""The admin side of the hub: the ``/api/v1`` API (:mod:`hub.admin.api`), who
may call it (:mod:`hub.admin.auth`) and what it reads (:mod:`hub.admin.queries`)."""
