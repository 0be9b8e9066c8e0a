"""Small utilities below everything else: atomic file writes, process memory, user-facing errors."""
