"""kerasdl.layers."""
