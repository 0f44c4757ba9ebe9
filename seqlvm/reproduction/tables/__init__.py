"""Every table `seqlvm reproduce` regenerates, by name (`TABLE_NAMES`), each a module of this package."""
from importlib import import_module

from seqlvm.reproduction.table import TABLE_NAMES

TABLES = {name: import_module(f"{__name__}.{name.replace('-', '_')}").TABLE for name in TABLE_NAMES}
