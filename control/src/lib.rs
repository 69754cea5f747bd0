//! The local control service (3scale Service Management API). Under construction.
