"""Training parts: callbacks, checkpoints, optimizer and schedules, evaluation, VisualDL logging."""
