"""Sub-commands of the `bioclip-hf` CLI (stdlib-only imports at module level)."""
