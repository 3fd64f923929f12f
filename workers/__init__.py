"""Background jobs run by arq workers."""
