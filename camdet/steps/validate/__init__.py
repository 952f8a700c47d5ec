"""``validate``: structural checks of encoded JPEG/PNG frames, made before any pixel is decoded."""
