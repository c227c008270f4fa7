"""Neural models of ReelRank: pure ``nn.Module``s with shape comments, no I/O and no device moves.

``embeddings`` holds the dynamic, collision-free ID table; ``retrieval`` the sequential two-tower;
``ranker`` the multi-task ranker; ``losses`` their training losses.
"""
