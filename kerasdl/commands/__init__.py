"""Subcommands of the ``kerasdl`` command, one module each (see kerasdl/cli.py)."""
