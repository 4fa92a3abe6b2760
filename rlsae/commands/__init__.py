"""CLI command groups. Each module registers its verbs on the shared sub-apps in ``_apps``.

Modules import heavy libraries (torch, transformers, ...) inside the command functions so that
``rlsae --help`` stays fast.
"""
