"""This suite runs from its own directory (``pytest``) as well as from the repository's root,
with the same session model and test tiers: see ``attribot_rag.testing``."""

from attribot_rag.testing import attributor, pytest_collection_modifyitems, pytest_configure  # noqa: F401
