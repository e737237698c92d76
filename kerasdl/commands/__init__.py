"""kerasdl.commands."""
