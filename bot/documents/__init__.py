"""Files the bot builds: spreadsheets, Word reports, charts (run off the event loop)."""
