"""Training data: the streamed loader, caption layouts, augmentation, TreeOfLife tar/catalog sources."""
