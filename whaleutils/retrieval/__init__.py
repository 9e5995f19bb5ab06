"""From a trained model to predictions: one fold's parts and galleries (``splits``),
embeddings (``embed``), nearest neighbours (``knn``), the heads (``heads``), local features
and the fused head (``local_features``, ``matching``).
"""
