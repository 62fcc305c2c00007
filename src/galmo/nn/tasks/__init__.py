"""What a training loop optimises: one task per file (``loss`` on a batch, ``validate`` on a loader;
see :mod:`galmo.nn.train`)."""
