"""Reserved for a later part of lmsav (see DESIGN.md)."""
