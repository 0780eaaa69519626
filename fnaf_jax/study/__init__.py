"""The FNAF study end to end (``fnaf reproduce``): presets, cached stages, the report.

- ``presets``: the typed, validated preset (shipped ``preset_files/*.json`` or a user file);
- ``stages``: the study's stages, each a config and the library function of a verb;
- ``pipeline``: stages with config-hash done-markers, resume, progress line, measured ETA;
- ``build``: the stages of a preset in order, and ``reproduce``;
- ``results``: the measured numbers gathered from the stages' outputs;
- ``paper``: the published numbers and the automatic check of each finding;
- ``figure_set``: the study's figures (``fnaf report`` per acceleration, Figure 1b);
- ``summary``: ``report.md`` and ``report.html``.
"""
