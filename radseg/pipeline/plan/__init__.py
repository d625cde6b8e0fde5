"""Planning: settings from the dataset's fingerprint, the machine and a wall-clock budget."""
