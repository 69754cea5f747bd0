//! A wasmtime host of the proxy-wasm ABI, Envoy-shaped. Under construction.
