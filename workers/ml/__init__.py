"""Model jobs' heavy lifting: compilation, parity, training and analyses (synchronous code)."""
