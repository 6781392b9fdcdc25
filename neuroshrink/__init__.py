"""Perforated NeuroShrink's support package: data, models, training, the library's tracker,
run folders and export. It imports nothing above it (never train_phase2.py or experiments/);
model.py, the plain CNNs, sits below it and imports only torch."""
