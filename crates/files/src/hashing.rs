//! The receiver's BLAKE3 of a file. For a large file it runs on its own
//! thread, so hashing and writing the file use two cores at once; a small
//! file is hashed inline (a thread per small file would cost more).

use bytes::Bytes;

use crate::CopyError;

/// Files at least this large are hashed on a thread of their own.
const THREAD_MIN_BYTES: u64 = 8 * 1024 * 1024;

/// Chunks queued to the hashing thread.
const HASH_QUEUE_CHUNKS: usize = 4;

/// BLAKE3 of the file being received.
pub(crate) enum Hashing {
    /// Hashed as it is written.
    Inline(Box<blake3::Hasher>),
    /// Chunks (shared, not copied) go to a hashing thread.
    Thread {
        tx: std::sync::mpsc::SyncSender<Bytes>,
        result: std::thread::JoinHandle<blake3::Hasher>,
    },
}

impl Hashing {
    /// Continues `hasher` (empty, or holding a resumed prefix) for a file of `size` bytes.
    pub(crate) fn start(mut hasher: blake3::Hasher, size: u64) -> Self {
        if size < THREAD_MIN_BYTES {
            return Self::Inline(Box::new(hasher));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(HASH_QUEUE_CHUNKS);
        let result = std::thread::spawn(move || {
            for chunk in rx {
                hasher.update(&chunk);
            }
            hasher
        });
        Self::Thread { tx, result }
    }

    pub(crate) fn update(&mut self, chunk: Bytes) {
        match self {
            Self::Inline(hasher) => {
                hasher.update(&chunk);
            }
            // The thread ends only when `tx` is dropped.
            Self::Thread { tx, .. } => {
                let _ = tx.send(chunk);
            }
        }
    }

    pub(crate) fn finish(self) -> Result<String, CopyError> {
        let hasher = match self {
            Self::Inline(hasher) => *hasher,
            Self::Thread { tx, result } => {
                drop(tx);
                result.join().map_err(|_| CopyError::Interrupted)?
            }
        };
        Ok(hasher.finalize().to_hex().to_string())
    }
}
