"""The web explorer of run folders with the expert-labelling loop (``galmo serve``, ``galmo finetune``).

:func:`galmo.web.app.create_app` builds the FastAPI application (fastapi is imported there only);
:mod:`galmo.web.labels` is the label store, :mod:`galmo.web.finetune` the retraining on its labels,
:mod:`galmo.web.config` the settings (no heavy imports). See ``docs/explorer.md``.
"""
