"""Study presets shipped with the package (JSON, read by ``fnaf_jax.study.presets``)."""
