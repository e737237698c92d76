"""kerasdl.data."""
