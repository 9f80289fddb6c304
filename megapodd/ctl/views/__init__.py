"""megapodctl's tables: one module per view, shared formatting in `text`."""
