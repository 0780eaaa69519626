"""Data: fastMRI HDF5 slices, the synthetic knee phantom set, annotations, TFDS builder."""
