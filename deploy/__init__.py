"""trot.deploy."""
