"""Pictures of a run: curves, batches, weights, attention, predictions; the VisualDL page."""
