"""The FNAF study end to end (``fnaf reproduce``): presets, cached stages, the report.

- ``presets``: load the shipped ``preset_files/{mini,smoke,synthetic,paper}.json`` or a user file;
- ``pipeline``: stages with config-hash done-markers, resume, progress line;
- ``stages``: the study's stages, each a thin call of another ``fnaf`` verb;
- ``results``: the measured numbers gathered from the stages' outputs;
- ``paper``: the published numbers and the automatic check of each finding;
- ``summary``: ``report.md`` and ``report.html``.
"""
