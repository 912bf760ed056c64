"""soteria_lib: gradient-inversion attacks and the Soteria defense, for teaching and reproduction."""
__version__ = "0.1.0"
