"""Bundled presets: one YAML file per method (installed as neuralart.bundled_presets)."""
