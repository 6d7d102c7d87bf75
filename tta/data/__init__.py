"""Dataset readers: CIFAR-C and ImageNet-C on disk, generated domains, and the offline demo."""
from .cifar_c import CifarCSource
from .clean import find_clean, load_clean
from .demo import DEMO_LABEL, DemoSource
from .domain import ArrayDomain, Domain
from .generated import GeneratedSource
from .imagenet_c import ImageNetCSource, imagenet_wnids
from .paths import cache_dir, default_data_dir
from .resolve import DATASETS, open_source
from .source import BENCHMARK_CORRUPTIONS, DomainSource

__all__ = [
    "BENCHMARK_CORRUPTIONS",
    "DATASETS",
    "DEMO_LABEL",
    "ArrayDomain",
    "CifarCSource",
    "DemoSource",
    "Domain",
    "DomainSource",
    "GeneratedSource",
    "ImageNetCSource",
    "cache_dir",
    "default_data_dir",
    "find_clean",
    "imagenet_wnids",
    "load_clean",
    "open_source",
]
