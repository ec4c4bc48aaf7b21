"""The ``dpctl`` command line: thin functions wiring envs/, data/, policy/ and control/."""
