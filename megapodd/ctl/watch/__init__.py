"""`megapodctl watch`: the live view (model -> render -> live)."""
