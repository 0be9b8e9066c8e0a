"""Training: the trainer, its run config, model init, validation, the contrastive loss and recipes."""
