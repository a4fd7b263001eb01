"""trot.train."""
