"""Entry points: the CLI, pipeline files, the stage registry and the demo."""
