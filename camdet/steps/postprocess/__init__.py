"""``postprocess``: YOLO head decoding, class-aware NMS, rescaling and box colours (torch)."""
