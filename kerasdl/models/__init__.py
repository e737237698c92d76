"""kerasdl.models."""
