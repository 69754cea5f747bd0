//! What the CLI's integration tests share: running the built `tollgate` binary.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::process::{Command, Output};

pub use tollgate_testsupport::workspace;

/// Runs the built `tollgate` with `args`.
pub fn tollgate<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("run tollgate")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
