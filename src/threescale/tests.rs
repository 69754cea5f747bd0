//! 3scale import tests.
