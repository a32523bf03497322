"""The repository's test suites share one embedded model per session and the test tiers
(markers ``model``, ``slow``, ``cuda``): see ``attribot_rag.testing``."""

from attribot_rag.testing import attributor, pytest_collection_modifyitems, pytest_configure  # noqa: F401
