import os
import sys

from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = os.path.join(ROOT, "specs")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

settings.register_profile("default", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


def spec_path(name: str) -> str:
    return os.path.join(SPECS, name)

