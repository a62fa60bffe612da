"""Files the bot builds (python-docx, openpyxl), off the event loop."""
