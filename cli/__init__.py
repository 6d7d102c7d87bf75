"""The ``tta`` command line (click). Commands are thin: parse, call tta, print."""
