//! Which byte stream a data frame belongs to, and its kind byte on the wire.
//!
//! A leaf: the frame codec ([`crate::frame`]) and the control messages
//! ([`crate::message`], e.g. `Eof { stream }`) both name streams.

/// Which byte stream a data frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamId {
    /// Standard input of the guest process (host to guest).
    Stdin,
    /// Standard output, or the terminal in pty mode (guest to host).
    Stdout,
    /// Standard error (guest to host).
    Stderr,
    /// Content of the file entry being copied (file service, either direction).
    File,
}

impl StreamId {
    /// The frame kind byte of this stream's data frames.
    pub const fn kind(self) -> u8 {
        match self {
            Self::Stdin => 0x01,
            Self::Stdout => 0x02,
            Self::Stderr => 0x03,
            Self::File => 0x04,
        }
    }

    /// The stream whose data frames have kind byte `kind` (`None` for the
    /// control kind 0x00 and for kinds this version does not know).
    pub const fn from_kind(kind: u8) -> Option<Self> {
        Some(match kind {
            0x01 => Self::Stdin,
            0x02 => Self::Stdout,
            0x03 => Self::Stderr,
            0x04 => Self::File,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_round_trips_through_its_kind_byte() {
        for stream in [
            StreamId::Stdin,
            StreamId::Stdout,
            StreamId::Stderr,
            StreamId::File,
        ] {
            assert_eq!(StreamId::from_kind(stream.kind()), Some(stream));
        }
        assert_eq!(StreamId::from_kind(0x00), None);
        assert_eq!(StreamId::from_kind(0x05), None);
    }
}
