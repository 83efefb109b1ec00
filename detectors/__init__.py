"""Pure statistics: detectors over numpy arrays (no I/O, no Kafka, no logging set-up).

Every detector follows one contract (:mod:`detectors.base`): keyword construction,
``update_many(series, t, x) -> list[Finding]``, ``state_dict()`` / ``from_state()``.
"""

from detectors.base import Detector, Finding, Side
from detectors.centroid import CentroidShift
from detectors.changes import ChangeTracker
from detectors.drop import PercentDrop
from detectors.floor import Floor
from detectors.rate import RateRatio
from detectors.shift import KsShift

__all__ = ["CentroidShift", "ChangeTracker", "Detector", "Finding", "Floor", "KsShift", "PercentDrop",
           "RateRatio", "Side"]
