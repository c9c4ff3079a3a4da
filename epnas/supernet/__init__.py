"""ENAS4D's once-for-all supernet of the ``multistage`` space: elastic modules, the
static sub-network of any genome, BatchNorm recalibration, and training by progressive
shrinking (:mod:`epnas.supernet.training`)."""

from epnas.supernet.elastic import ElasticBlock, Supernet, recalibrate
from epnas.supernet.training import (
    PHASES,
    SupernetOptions,
    SupernetTraining,
    load_supernet,
    save_supernet,
)

__all__ = ["PHASES", "ElasticBlock", "Supernet", "SupernetOptions", "SupernetTraining",
           "load_supernet", "recalibrate", "save_supernet"]
