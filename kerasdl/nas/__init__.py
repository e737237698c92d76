"""kerasdl.nas."""
