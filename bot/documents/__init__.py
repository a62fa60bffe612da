"""Files the bot builds (charts, spreadsheets, Word drafts): pure functions, run off the loop."""
