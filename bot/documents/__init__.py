"""Word documents the bot builds (python-docx), off the event loop."""
