"""The after-sales channel hub: core daemon (config, records, storage, inbox,
pipeline, mapping engine, lifecycle, linking, outbox, delivery, server, CLI).

The core never imports a particular connector; connectors plug in through the
``hub.connectors`` entry-point group (see :mod:`hub.registry`).
"""

__version__ = "0.1.0"
