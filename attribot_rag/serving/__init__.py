"""Delivery: the citation service and its client, batch jobs locally and on Ray. Imports the
API and the algorithm; the command line (``attribot_rag.cli``) is the other delivery layer."""
