//! Hostile mode: chosen hostcalls answer a status the module does not expect, without doing
//! anything, so tests can check that a filter survives any answer a host may give.

use std::fmt;

use crate::state::status;

/// Declares [`HostCall`] from the ABI's import names, so the list exists once.
macro_rules! host_calls {
    ($($variant:ident = $name:literal,)*) => {
        /// A hostcall of the proxy-wasm ABI (v0.2.1), by the name the module imports it under
        /// (`env.<name>`), or all of them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum HostCall {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
            /// Every hostcall.
            All,
        }

        impl HostCall {
            /// Every hostcall of the ABI (without [`HostCall::All`]).
            pub const EVERY: &'static [HostCall] = &[$(HostCall::$variant,)*];

            /// The import name (`proxy_…`); `*` for [`HostCall::All`].
            pub fn name(self) -> &'static str {
                match self {
                    $(HostCall::$variant => $name,)*
                    HostCall::All => "*",
                }
            }

            /// The hostcall a module imports as `env.<name>`, if the ABI has it.
            pub fn from_import(name: &str) -> Option<HostCall> {
                match name {
                    $($name => Some(HostCall::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

host_calls! {
    Log = "proxy_log",
    GetLogLevel = "proxy_get_log_level",
    SetTickPeriodMilliseconds = "proxy_set_tick_period_milliseconds",
    GetCurrentTimeNanoseconds = "proxy_get_current_time_nanoseconds",
    GetStatus = "proxy_get_status",
    SetEffectiveContext = "proxy_set_effective_context",
    Done = "proxy_done",
    CallForeignFunction = "proxy_call_foreign_function",
    GetProperty = "proxy_get_property",
    SetProperty = "proxy_set_property",
    GetBufferBytes = "proxy_get_buffer_bytes",
    SetBufferBytes = "proxy_set_buffer_bytes",
    GetBufferStatus = "proxy_get_buffer_status",
    GetHeaderMapPairs = "proxy_get_header_map_pairs",
    SetHeaderMapPairs = "proxy_set_header_map_pairs",
    GetHeaderMapValue = "proxy_get_header_map_value",
    AddHeaderMapValue = "proxy_add_header_map_value",
    ReplaceHeaderMapValue = "proxy_replace_header_map_value",
    RemoveHeaderMapValue = "proxy_remove_header_map_value",
    GetHeaderMapSize = "proxy_get_header_map_size",
    SendLocalResponse = "proxy_send_local_response",
    ContinueStream = "proxy_continue_stream",
    CloseStream = "proxy_close_stream",
    HttpCall = "proxy_http_call",
    GrpcCall = "proxy_grpc_call",
    GrpcStream = "proxy_grpc_stream",
    GrpcSend = "proxy_grpc_send",
    GrpcCancel = "proxy_grpc_cancel",
    GrpcClose = "proxy_grpc_close",
    RegisterSharedQueue = "proxy_register_shared_queue",
    ResolveSharedQueue = "proxy_resolve_shared_queue",
    EnqueueSharedQueue = "proxy_enqueue_shared_queue",
    DequeueSharedQueue = "proxy_dequeue_shared_queue",
    GetSharedData = "proxy_get_shared_data",
    SetSharedData = "proxy_set_shared_data",
    DefineMetric = "proxy_define_metric",
    IncrementMetric = "proxy_increment_metric",
    RecordMetric = "proxy_record_metric",
    GetMetric = "proxy_get_metric",
}

impl HostCall {
    /// Whether this names the hostcall imported as `name`.
    pub fn covers(self, name: &str) -> bool {
        self == HostCall::All || self.name() == name
    }
}

impl fmt::Display for HostCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A status a hostcall returns (Envoy's `WasmResult`), or a number the ABI does not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 1
    NotFound,
    /// 2
    BadArgument,
    /// 3
    SerializationFailure,
    /// 6
    InvalidMemoryAccess,
    /// 7
    Empty,
    /// 8
    CasMismatch,
    /// 10
    InternalFailure,
    /// 11
    BrokenConnection,
    /// 12
    Unimplemented,
    /// Any number, defined by the ABI or not (77 is not).
    Code(u32),
}

impl Status {
    /// The statuses hostile tests try: the ones the issue names and one the ABI lacks.
    pub const UNEXPECTED: [Status; 4] = [
        Status::BadArgument,
        Status::NotFound,
        Status::InternalFailure,
        Status::Code(77),
    ];

    /// The number the module sees.
    pub fn code(self) -> u32 {
        match self {
            Status::NotFound => status::NOT_FOUND,
            Status::BadArgument => status::BAD_ARGUMENT,
            Status::SerializationFailure => status::SERIALIZATION_FAILURE,
            Status::InvalidMemoryAccess => status::INVALID_MEMORY_ACCESS,
            Status::Empty => status::EMPTY,
            Status::CasMismatch => status::CAS_MISMATCH,
            Status::InternalFailure => status::INTERNAL_FAILURE,
            Status::BrokenConnection => status::BROKEN_CONNECTION,
            Status::Unimplemented => status::UNIMPLEMENTED,
            Status::Code(n) => n,
        }
    }
}

/// One rule of hostile mode: `call` (or every call) answers `status` and does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hostile {
    /// Which hostcall.
    pub call: HostCall,
    /// What it answers.
    pub status: Status,
}

/// A hostile answer the host gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostileAnswer {
    /// The VM's label.
    pub vm: String,
    /// The import name of the call.
    pub call: String,
    /// The status returned.
    pub status: u32,
}
