"""The bundle protocol agent (sans-I/O core) and its bundle store."""
