"""focus_core: the science of the Focus metric (torch only; no Prefect, no SQL).

Import the modules, so the import says where a thing lives::

    from focus_core import data, mosaics, metric, explainers, models
"""

from focus_core.errors import FocusError

__all__ = ["FocusError"]
__version__ = "0.1.0"
