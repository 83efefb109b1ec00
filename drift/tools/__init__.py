"""Demo and development tools: simulator, demo, embedded broker, scorecard, plots, real RAG scores."""
