//! tollgate as a proxy-wasm filter. Under construction.
