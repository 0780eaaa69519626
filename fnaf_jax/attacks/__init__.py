"""FNAF attacks: random search, finite-difference location ascent, dataset evaluation."""
