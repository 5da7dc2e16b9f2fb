"""Export a trained run for deployment and run the exported model."""
