//! What changes on the way to the upstream and back (reference §4.1): the secret token the API
//! checks, the debug header that must not leak upstream, and APIcast's debug headers on the
//! response for a client that proved it knows the service's token.

/// Sent upstream with the service's `secret_token`, so the API can refuse traffic that did not
/// come through the gateway.
pub const SECRET_TOKEN_HEADER: &str = "x-3scale-proxy-secret-token";
/// A client sends this with the service's token to get the debug headers; never forwarded.
pub const DEBUG_HEADER: &str = "x-3scale-debug";
