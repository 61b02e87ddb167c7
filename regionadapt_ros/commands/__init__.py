"""One module per ``regionadapt`` command group; each exposes ``register(subparsers)``."""
