"""Studies run before or beside training: LR range test, init study, receptive field."""
