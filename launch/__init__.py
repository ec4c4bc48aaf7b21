"""The ``dpctrl`` command line (``cli``): thin functions over the library; ``options`` holds the shared
options and output helpers, ``bench_cli`` one sub-command per benchmark."""
