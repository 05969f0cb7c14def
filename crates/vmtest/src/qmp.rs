//! The QEMU Machine Protocol, just enough to pause and resume the test VM
//! as an operator (or libvirt's `virsh suspend`) would: a blocking client
//! on QEMU's `-qmp unix:…` socket that negotiates capabilities and runs one
//! command, skipping the asynchronous events QEMU sends in between.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long QEMU may take to answer one QMP message.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Most lines read while waiting for one answer (events come in between).
const MAX_LINES_PER_ANSWER: usize = 64;

/// Runs QMP command `execute` (no arguments) on the socket at `path` and
/// returns its `return` value; QEMU's `error` becomes an `Err` message.
pub(crate) fn run(path: &Path, execute: &str) -> std::io::Result<serde_json::Value> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    // The greeting: {"QMP": {...}}.
    let greeting = next_message(&mut reader)?;
    if greeting.get("QMP").is_none() {
        return Err(std::io::Error::other(format!(
            "not a QMP greeting: {greeting}"
        )));
    }
    for command in ["qmp_capabilities", execute] {
        writeln!(writer, "{}", serde_json::json!({ "execute": command }))?;
        let answer = answer(&mut reader)?;
        if command == execute {
            return Ok(answer);
        }
    }
    unreachable!("the loop returns at its last command")
}

/// The next answer (`return` or `error`), events skipped.
fn answer(reader: &mut impl BufRead) -> std::io::Result<serde_json::Value> {
    for _ in 0..MAX_LINES_PER_ANSWER {
        let mut message = next_message(reader)?;
        if let Some(value) = message.get_mut("return") {
            return Ok(value.take());
        }
        if let Some(error) = message.get("error") {
            return Err(std::io::Error::other(format!("QMP error: {error}")));
        }
    }
    Err(std::io::Error::other(format!(
        "no QMP answer within {MAX_LINES_PER_ANSWER} messages"
    )))
}

fn next_message(reader: &mut impl BufRead) -> std::io::Result<serde_json::Value> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("QEMU closed the QMP socket"));
    }
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_skip_events_and_errors_are_errors() {
        let text = "{\"event\": \"STOP\"}\r\n{\"return\": {\"status\": \"paused\"}}\r\n";
        let got = answer(&mut text.as_bytes()).expect("an answer");
        assert_eq!(got["status"], "paused");
        let text = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\r\n";
        let err = answer(&mut text.as_bytes()).expect_err("an error");
        assert!(err.to_string().contains("GenericError"), "{err}");
        assert!(answer(&mut "".as_bytes()).is_err());
    }
}
