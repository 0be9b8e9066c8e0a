"""The label space: taxonomy, taxa columns, the Tree-of-Life index with its files and cache, text recipes."""
