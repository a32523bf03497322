"""The API: options, the attributor and its protocol, results, the citation view and its HTML
page, the request model. Imports the algorithm (``core``), nothing from the delivery layers."""
