"""The application, built on the core and the reference network.

Configuration (``config``), the trainer (``train``), checkpoints and their formats
(``checkpoints``), the command line (``cli``), data and degradations (``data``,
``degradations``), metrics (``metrics``), the prompt-effect report (``effect``), export
(``export``), compiling (``compiling``), the demo, plots and TensorBoard logging. Import each
from its module; this package imports none of them by itself.
"""
