"""The yoton broker: runs beside the kernel and relays it to remote clients.

Start it with ``yoton-broker`` or ``python -m broker``; see ``protocol.md section 6``
for the channels it adds and ``broker.core.Broker`` for the implementation.
"""

__version__ = "3.0.0.dev0"
