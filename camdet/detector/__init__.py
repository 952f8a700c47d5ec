"""The demo detector: YOLOv8-style model, loss, synthetic data, training, export, evaluation."""
