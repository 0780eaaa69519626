"""fnaf-jax: find the small features an MRI reconstruction model erases (FNAF, MIDL 2020)."""

__version__ = "0.1.0"
