//! Requests to the control service (3scale's Service Management API).
//!
//! Every key and value is percent-encoded: apisonator parses queries with Rack, which turns `+`
//! into a space, splits on `&` (and on `;` before Rack 3) and stops at `#`, so a credential that
//! contains any of these would otherwise reach it changed. Raw query credentials are sent as
//! the client wrote them, encoded once more, exactly as APIcast does with `ngx.encode_args`.

pub mod answer;
pub mod percent;

use std::fmt::Write;

use crate::config::BackendVersion;
use crate::credentials::Credentials;

/// The `3scale-options` header APIcast sends with every authorization call.
pub const OPTIONS_HEADER: &str = "3scale-options";
pub const OPTIONS_VALUE: &str = "rejection_reason_header=1&limit_headers=1&no_body=1";

pub const AUTHREP_PATH: &str = "/transactions/authrep.xml";
pub const OAUTH_AUTHREP_PATH: &str = "/transactions/oauth_authrep.xml";

pub const AUTHORIZE_PATH: &str = "/transactions/authorize.xml";
pub const OAUTH_AUTHORIZE_PATH: &str = "/transactions/oauth_authorize.xml";
/// Where batched reports go.
pub const REPORT_PATH: &str = "/transactions.xml";

pub fn authrep_path(version: BackendVersion) -> &'static str {
    match version {
        BackendVersion::OAuth => OAUTH_AUTHREP_PATH,
        BackendVersion::UserKey | BackendVersion::AppIdKey => AUTHREP_PATH,
    }
}

/// Which authorization call: `authrep` reports the usage it authorizes, `authorize` (the
/// batcher's) only checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCall {
    Authrep,
    Authorize,
}

pub fn auth_path(call: AuthCall, version: BackendVersion) -> &'static str {
    match (call, version) {
        (AuthCall::Authrep, v) => authrep_path(v),
        (AuthCall::Authorize, BackendVersion::OAuth) => OAUTH_AUTHORIZE_PATH,
        (AuthCall::Authorize, _) => AUTHORIZE_PATH,
    }
}

/// Everything an authrep call carries, already encoded where it can be at configure time.
pub struct AuthrepRequest<'a, 'r> {
    pub call: AuthCall,
    pub version: BackendVersion,
    /// Encoded `service_id=…&service_token=…` (or `provider_key=…`).
    pub service_params: &'a str,
    pub credentials: &'a Credentials<'r>,
    /// `(encoded key such as usage%5Bhits%5D, delta)`, in the order to send them.
    pub usage: &'a mut dyn Iterator<Item = (&'a str, i64)>,
}

/// Appends the path and query of the authrep call to `out`:
/// `/transactions/authrep.xml?service_id=…&service_token=…&user_key=…&usage%5Bhits%5D=1`.
pub fn write_authrep(req: AuthrepRequest<'_, '_>, out: &mut String) {
    out.push_str(auth_path(req.call, req.version));
    out.push('?');
    out.push_str(req.service_params);
    for (name, value) in req.credentials.params() {
        out.push('&');
        out.push_str(name);
        out.push('=');
        percent::encode_into(value, out);
    }
    for (key, delta) in req.usage {
        out.push('&');
        out.push_str(key);
        // Writing an integer into a String cannot fail.
        let _ = write!(out, "={delta}");
    }
}

/// `service_id=<id>&<service_token|provider_key>=<value>`, encoded; only `service_id=<id>`
/// for a service without a token (APIcast's `backend_client.lua` sends none then).
pub fn service_params(service_id: &str, auth: Option<(&str, &str)>) -> String {
    let mut s = String::from("service_id=");
    percent::encode_into(service_id.as_bytes(), &mut s);
    if let Some((param, value)) = auth {
        s.push('&');
        s.push_str(param);
        s.push('=');
        percent::encode_into(value.as_bytes(), &mut s);
    }
    s
}

/// `usage%5B<metric>%5D`, encoded.
pub fn usage_key(metric: &str) -> String {
    let mut s = String::new();
    percent::encode_into(format!("usage[{metric}]").as_bytes(), &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn authrep_is_fully_encoded() {
        let creds = Credentials::AppId {
            app_id: Cow::Borrowed(b"app id"),
            app_key: Cow::Borrowed(b"k+e%y&z=#1;\xc3\xa9"),
        };
        let keys = [usage_key("a b/c"), usage_key("hits")];
        let mut usage = keys.iter().map(String::as_str).zip([2, 1]);
        let mut out = String::new();
        write_authrep(
            AuthrepRequest {
                call: AuthCall::Authrep,
                version: BackendVersion::AppIdKey,
                service_params: &service_params("42", Some(("service_token", "tok en+/="))),
                credentials: &creds,
                usage: &mut usage,
            },
            &mut out,
        );
        assert_eq!(
            out,
            "/transactions/authrep.xml?service_id=42&service_token=tok%20en%2B%2F%3D\
             &app_id=app%20id&app_key=k%2Be%25y%26z%3D%231%3B%C3%A9\
             &usage%5Ba%20b%2Fc%5D=2&usage%5Bhits%5D=1"
        );
    }

    #[test]
    fn raw_query_credentials_are_encoded_again() {
        // `?user_key=a%2Bb+c%26d` reaches the backend as the text the client sent.
        let creds = Credentials::UserKey(Cow::Borrowed(b"a%2Bb+c%26d"));
        let mut usage = std::iter::empty();
        let mut out = String::new();
        write_authrep(
            AuthrepRequest {
                call: AuthCall::Authrep,
                version: BackendVersion::UserKey,
                service_params: &service_params("1", Some(("provider_key", "pk"))),
                credentials: &creds,
                usage: &mut usage,
            },
            &mut out,
        );
        assert_eq!(
            out,
            "/transactions/authrep.xml?service_id=1&provider_key=pk&user_key=a%252Bb%2Bc%2526d"
        );
    }

    #[test]
    fn oauth_uses_its_own_endpoint() {
        assert_eq!(
            authrep_path(BackendVersion::OAuth),
            "/transactions/oauth_authrep.xml"
        );
    }
}
