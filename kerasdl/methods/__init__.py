"""kerasdl.methods."""
