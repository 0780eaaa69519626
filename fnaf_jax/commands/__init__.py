"""Sub-commands of the ``fnaf`` CLI; each module defines ``register(subparsers)``."""
