//! What the CLI's integration tests share: running the built `tollgate` binary.
// Each test binary uses its own subset of these.
#![allow(dead_code, unused_imports)]

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

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

/// Runs the built `tollgate` with `input` on its standard input (written from another thread:
/// the CLI may stop reading before the end).
pub fn tollgate_with_stdin(args: &[&str], input: Vec<u8>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tollgate");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("tollgate output");
    writer.join().expect("stdin writer");
    out
}
