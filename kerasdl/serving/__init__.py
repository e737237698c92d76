"""kerasdl.serving."""
