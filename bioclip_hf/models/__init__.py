"""Model code: the transformers role files (bioclip/), loading with pins, Auto-class registration, conversion."""
