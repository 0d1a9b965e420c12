"""How hard the property tests try: the example counts each module asks for
under `make test`, a tenth of them under `make test-fast`, which sets
KVSTORE_QUICK_PROPERTIES=1 so the fast set stays an inner loop of seconds.
CI runs `make test`, so every count holds before a change lands."""

import os

from hypothesis import settings

QUICK = os.environ.get("KVSTORE_QUICK_PROPERTIES") == "1"

# Tests with no settings of their own take hypothesis's default profile.
settings.register_profile("quick", max_examples=10, deadline=None)
if QUICK:
    settings.load_profile("quick")


def properties(max_examples: int) -> settings:
    """Settings for a property test that asks for `max_examples` examples."""
    return settings(max_examples=max(5, max_examples // 10) if QUICK else max_examples,
                    deadline=None)
