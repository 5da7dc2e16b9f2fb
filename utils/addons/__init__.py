"""Add-ons the training spine plugs in: EMA, mixed precision, fine-tuning, data parallel."""
