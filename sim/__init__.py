"""trot.sim."""
