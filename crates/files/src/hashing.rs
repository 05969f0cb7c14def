//! The receiver's BLAKE3 of a file, on its own thread: hashing overlaps
//! writing the file, which matters when both compete for one core's time.

use bytes::Bytes;

use crate::CopyError;

/// BLAKE3 of the current file, computed on its own thread so that hashing
/// overlaps writing (the body is shared, not copied).
pub(crate) struct Hashing {
    tx: std::sync::mpsc::SyncSender<Bytes>,
    result: std::thread::JoinHandle<blake3::Hasher>,
}

/// Chunks queued to the hashing thread.
const HASH_QUEUE_CHUNKS: usize = 4;

impl Hashing {
    pub(crate) fn start(mut hasher: blake3::Hasher) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(HASH_QUEUE_CHUNKS);
        let result = std::thread::spawn(move || {
            for chunk in rx {
                hasher.update(&chunk);
            }
            hasher
        });
        Self { tx, result }
    }

    pub(crate) fn update(&self, chunk: Bytes) {
        // The thread only ends when `tx` is dropped.
        let _ = self.tx.send(chunk);
    }

    pub(crate) fn finish(self) -> Result<String, CopyError> {
        drop(self.tx);
        let hasher = self.result.join().map_err(|_| CopyError::Interrupted)?;
        Ok(hasher.finalize().to_hex().to_string())
    }
}
