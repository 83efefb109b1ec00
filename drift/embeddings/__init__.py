"""Query embeddings: the sentence encoder and golden sets (faiss)."""
