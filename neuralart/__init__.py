"""neuralart: neural style transfer after Gatys et al. and Novak & Nikulin (2016)."""

__version__ = "0.1.0"
