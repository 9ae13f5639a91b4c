"""The AI builder's host side: the planner itself is a plugin."""
