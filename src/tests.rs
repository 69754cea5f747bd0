//! End-to-end decisions over whole configurations.
