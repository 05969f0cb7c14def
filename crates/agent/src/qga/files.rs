//! guest-file-open, -read, -write, -seek, -flush, -close: files the host
//! opened in the guest, by handle. The guest policy sees each open as the
//! copy it amounts to (out of the guest to read, into it to write).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use base64::Engine;
use guestcomm_protocol::files::{CopyFromGuest, CopyToGuest};
use guestcomm_protocol::Call;
use serde_json::json;

use super::reply::{generic, locked, tri, Reply};
use crate::limits::{MAX_QGA_FILE_READ_BYTES, MAX_QGA_OPEN_FILES};

/// The first handle given out (qemu-ga's are large integers too).
const FIRST_HANDLE: i64 = 1000;

/// An open file, locked while one command uses it.
type Shared = Arc<Mutex<File>>;

/// The open files: the next handle, and each open one.
pub(super) struct Files {
    open: Mutex<(i64, HashMap<i64, Shared>)>,
}

impl Default for Files {
    fn default() -> Self {
        Self {
            open: Mutex::new((FIRST_HANDLE, HashMap::new())),
        }
    }
}

impl Files {
    fn file(&self, handle: i64) -> Result<Shared, Reply> {
        locked(&self.open)
            .1
            .get(&handle)
            .cloned()
            .ok_or_else(|| generic(format!("handle '{handle}' has not been found")))
    }

    /// Opens `path` as fopen() would with `mode`.
    pub(super) fn open(
        &self,
        allowed: impl Fn(Call) -> Result<(), Reply>,
        path: &str,
        mode: &str,
    ) -> Reply {
        let plain: String = mode.chars().filter(|c| *c != 'b').collect();
        let (read, write) = match plain.as_str() {
            "r" => (true, false),
            "w" | "a" => (false, true),
            "r+" | "w+" | "a+" => (true, true),
            _ => return generic(format!("invalid file open mode '{mode}'")),
        };
        if read {
            tri!(allowed(Call::CopyFromGuest(CopyFromGuest {
                src: path.to_string(),
                ..Default::default()
            })));
        }
        if write {
            tri!(allowed(Call::CopyToGuest(CopyToGuest {
                dst: path.to_string(),
                ..Default::default()
            })));
        }
        if locked(&self.open).1.len() >= MAX_QGA_OPEN_FILES {
            return generic(format!(
                "too many open files (at most {MAX_QGA_OPEN_FILES}): close some first"
            ));
        }
        let mut options = OpenOptions::new();
        match plain.as_str() {
            "r" => options.read(true),
            "r+" => options.read(true).write(true),
            "w" => options.write(true).create(true).truncate(true),
            "w+" => options.read(true).write(true).create(true).truncate(true),
            "a" => options.append(true).create(true),
            _ => options.read(true).append(true).create(true),
        };
        let file = match options.open(path) {
            Ok(file) => file,
            Err(e) => {
                return generic(format!(
                    "failed to open file '{path}' (mode: '{mode}'): {e}"
                ))
            }
        };
        let mut open = locked(&self.open);
        let handle = open.0;
        open.0 += 1;
        open.1.insert(handle, Arc::new(Mutex::new(file)));
        Reply::Return(json!(handle))
    }

    /// Closes a handle.
    pub(super) fn close(&self, handle: i64) -> Reply {
        match locked(&self.open).1.remove(&handle) {
            Some(_) => Reply::Return(json!({})),
            None => generic(format!("handle '{handle}' has not been found")),
        }
    }

    /// Reads up to `count` bytes.
    pub(super) fn read(&self, handle: i64, count: i64) -> Reply {
        let file = tri!(self.file(handle));
        let Some(count) = usize::try_from(count)
            .ok()
            .filter(|c| *c <= MAX_QGA_FILE_READ_BYTES)
        else {
            return generic(format!("value '{count}' is invalid for argument count"));
        };
        let mut buf = Vec::with_capacity(count.min(1 << 20));
        let read = (&mut *locked(&file))
            .take(count as u64)
            .read_to_end(&mut buf);
        match read {
            Ok(n) => Reply::Return(json!({
                "count": n,
                "buf-b64": base64::engine::general_purpose::STANDARD.encode(&buf),
                "eof": n < count,
            })),
            Err(e) => generic(format!("failed to read file: {e}")),
        }
    }

    /// Writes `data` (base64), or its first `count` bytes.
    pub(super) fn write(&self, handle: i64, data: &str, count: Option<i64>) -> Reply {
        let file = tri!(self.file(handle));
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
            return generic("Invalid parameter 'buf-b64': not base64");
        };
        let count = match count {
            None => bytes.len(),
            Some(c) => match usize::try_from(c).ok().filter(|c| *c <= bytes.len()) {
                Some(c) => c,
                None => return generic(format!("value '{c}' is invalid for argument count")),
            },
        };
        let written = locked(&file).write_all(&bytes[..count]);
        match written {
            Ok(()) => Reply::Return(json!({ "count": count, "eof": false })),
            Err(e) => generic(format!("failed to write to file: {e}")),
        }
    }

    /// Moves the position (`whence` 0 set, 1 current, 2 end).
    pub(super) fn seek(&self, handle: i64, offset: i64, whence: i64) -> Reply {
        let file = tri!(self.file(handle));
        let to = match (whence, u64::try_from(offset)) {
            (0, Ok(at)) => SeekFrom::Start(at),
            (1, _) => SeekFrom::Current(offset),
            (2, _) => SeekFrom::End(offset),
            _ => return generic("Invalid parameter 'whence'"),
        };
        let moved = locked(&file).seek(to);
        match moved {
            Ok(position) => Reply::Return(json!({ "position": position, "eof": false })),
            Err(e) => generic(format!("failed to seek file: {e}")),
        }
    }

    /// Nothing is buffered here; kept for the protocol.
    pub(super) fn flush(&self, handle: i64) -> Reply {
        let file = tri!(self.file(handle));
        let flushed = locked(&file).flush();
        match flushed {
            Ok(()) => Reply::Return(json!({})),
            Err(e) => generic(format!("failed to flush file: {e}")),
        }
    }
}
