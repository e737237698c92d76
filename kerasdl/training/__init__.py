"""kerasdl.training."""
