"""Settings package: ``base`` holds everything; ``test`` adjusts it for the suite."""

from .base import *  # noqa: F403
