"""Support: the error and support inboxes, and transactional email."""
