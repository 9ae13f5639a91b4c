"""Plugins that ship inside levqor-kernel."""
