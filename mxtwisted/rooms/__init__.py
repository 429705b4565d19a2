"""The room engine: every event, local or from federation, goes through here."""
