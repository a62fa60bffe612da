"""Files the bot builds for people: spreadsheets, Word documents, images. Pure functions."""
