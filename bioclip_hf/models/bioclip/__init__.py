"""BioCLIP's transformers role files; they import only each other, so `trust_remote_code` copies them whole."""
