//! The cheapest useful proxy-wasm filter: read one request header, let the request through.
//! What `make bench` measures tollgate against, so the figure is tollgate's own cost rather
//! than the cost of running Wasm in Envoy at all.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(Root));
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Passthrough))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Passthrough;

impl Context for Passthrough {}

impl HttpContext for Passthrough {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        // Read (and ignore) one header, as the lightest real filter would.
        let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":authority");
        Action::Continue
    }
}
