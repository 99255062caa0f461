"""Click commands, grouped by concern. Thin: they call the core and render its results."""
