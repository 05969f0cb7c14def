//! The QGA wire: a stream of JSON objects, not necessarily one per line,
//! in which a 0xFF byte throws away whatever was read before it (the
//! client's way to resynchronise, see guest-sync-delimited).

use serde_json::Value;

use crate::limits::MAX_QGA_REQUEST_BYTES;

/// The resynchronisation byte (never valid in UTF-8 JSON).
pub(super) const RESYNC: u8 = 0xFF;

/// What the next bytes of the stream hold.
#[derive(Debug, PartialEq)]
pub(super) enum Next {
    /// A whole JSON value.
    Value(Value),
    /// Bytes that are not JSON (dropped up to the next line), and why.
    Garbage(String),
    /// A value longer than [`MAX_QGA_REQUEST_BYTES`] (dropped whole).
    TooLarge,
    /// Nothing whole yet.
    More,
}

/// Bytes received and not yet taken as values. Where a value ends is found
/// by one pass over each byte (brackets and strings), so a large request
/// costs linear time however it is split.
#[derive(Debug, Default)]
pub(super) struct Requests {
    buf: Vec<u8>,
    /// Skipping an oversized value until the next resync or newline.
    skipping: bool,
    /// Bytes of `buf` already scanned, and the scanner's state there.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Requests {
    /// Adds received bytes; a 0xFF drops everything before it.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        match bytes.iter().rposition(|b| *b == RESYNC) {
            Some(at) => {
                self.restart();
                self.buf.clear();
                self.skipping = false;
                self.buf.extend_from_slice(&bytes[at + 1..]);
            }
            None => self.buf.extend_from_slice(bytes),
        }
    }

    fn restart(&mut self) {
        self.scanned = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    /// Drops `buf` up to and including its next newline (all of it if none).
    fn drop_line(&mut self) {
        let end = self
            .buf
            .iter()
            .position(|b| *b == b'\n')
            .map_or(self.buf.len(), |at| at + 1);
        self.buf.drain(..end);
        self.restart();
    }

    /// Where the value at the start of `buf` ends, scanning on from where
    /// the last call stopped.
    fn end_of_value(&mut self) -> Option<usize> {
        while self.scanned < self.buf.len() {
            let b = self.buf[self.scanned];
            self.scanned += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(self.scanned);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Takes the next value, if one is whole.
    pub(super) fn next(&mut self) -> Next {
        if self.skipping {
            match self.buf.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    self.buf.drain(..=at);
                    self.skipping = false;
                }
                None => {
                    self.buf.clear();
                    return Next::More;
                }
            }
        }
        if self.scanned == 0 {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if self.buf.is_empty() {
                return Next::More;
            }
            if !matches!(self.buf[0], b'{' | b'[') {
                self.drop_line();
                return Next::Garbage("QMP input must be a JSON object".into());
            }
        }
        let Some(end) = self.end_of_value() else {
            if self.buf.len() > MAX_QGA_REQUEST_BYTES {
                self.buf.clear();
                self.restart();
                self.skipping = true;
                return Next::TooLarge;
            }
            return Next::More;
        };
        let parsed = serde_json::from_slice::<Value>(&self.buf[..end]);
        self.restart();
        match parsed {
            Ok(value) => {
                self.buf.drain(..end);
                Next::Value(value)
            }
            Err(e) => {
                self.drop_line();
                Next::Garbage(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(r: &mut Requests) -> Vec<Next> {
        let mut out = Vec::new();
        loop {
            match r.next() {
                Next::More => return out,
                other => out.push(other),
            }
        }
    }

    #[test]
    fn values_split_anywhere_or_packed_together_come_out_whole() {
        let mut r = Requests::default();
        r.feed(br#"{"execute": "guest-p"#);
        assert_eq!(all(&mut r), vec![]);
        r.feed(b"ing\"}{\"execute\":\n\"guest-info\"}\n");
        assert_eq!(
            all(&mut r),
            vec![
                Next::Value(serde_json::json!({"execute": "guest-ping"})),
                Next::Value(serde_json::json!({"execute": "guest-info"})),
            ]
        );
    }

    #[test]
    fn resync_drops_a_half_value_and_garbage_drops_its_line() {
        let mut r = Requests::default();
        r.feed(br#"{"execute": "gue"#);
        r.feed(b"\xff{\"execute\":\"guest-ping\"}");
        assert_eq!(
            all(&mut r),
            vec![Next::Value(serde_json::json!({"execute": "guest-ping"}))]
        );
        r.feed(b"garbage here\n{\"execute\":\"guest-ping\"}\n");
        let got = all(&mut r);
        assert!(matches!(got[0], Next::Garbage(_)), "{got:?}");
        assert_eq!(
            got[1],
            Next::Value(serde_json::json!({"execute": "guest-ping"}))
        );
    }

    #[test]
    fn an_oversized_value_is_dropped_and_the_stream_goes_on() {
        let mut r = Requests::default();
        let mut huge = br#"{"execute": "guest-ping", "x": ""#.to_vec();
        huge.resize(MAX_QGA_REQUEST_BYTES + 10, b'a');
        r.feed(&huge);
        assert_eq!(all(&mut r), vec![Next::TooLarge]);
        r.feed(b"aaaa\"}\n{\"execute\":\"guest-ping\"}\n");
        assert_eq!(
            all(&mut r),
            vec![Next::Value(serde_json::json!({"execute": "guest-ping"}))]
        );
    }
}
