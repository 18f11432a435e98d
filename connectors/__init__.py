"""Channel and destination connectors. Each sub-package is one channel or
destination kind (client/protocol, verification, connector, simulator) and
plugs into the core through the ``hub.connectors`` entry-point group."""
