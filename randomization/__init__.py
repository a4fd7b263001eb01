"""trot.randomization."""
