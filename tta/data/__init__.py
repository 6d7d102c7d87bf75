"""Datasets: readers of CIFAR-C and ImageNet-C on disk, generated domains and the offline demo, and the file formats
they share with ``tta.corruptions`` and ``tta.training`` (``imagesets``: clean image arrays; ``manifest``: the
``tta corrupt`` manifest).

Kept empty of imports, so that ``tta.corruptions`` (the generator) can use the two formats without loading the
readers, which use the generator for generated domains: import from the module that holds a name
(``tta.data.resolve.open_source``, ``tta.data.paths.default_data_dir``, ``tta.data.cifar_c.CifarCSource``, ...).
"""
