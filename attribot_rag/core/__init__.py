"""The algorithm: documents and spans, the rendered prompt, the ablation rule, the scorer,
the attribution methods and model loading. Imports nothing from the layers above."""
