"""The web console: nothing yet; the package holds the place of the coming front end."""
