//! Why a store operation failed ([`StoreError`]) and what that means to a
//! caller (its [`ErrorKind`]); a leaf, so every file of the store may use it.

use guestcomm_protocol::integration::KvpError;
use guestcomm_protocol::ServiceId;

use crate::error::{Classified, Error, ErrorKind};

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No VM of that name.
    #[error("no VM named {0:?} (see `guestcomm vm list`)")]
    UnknownVm(String),
    /// A VM of that name exists already.
    #[error("a VM named {0:?} already exists")]
    DuplicateVm(String),
    /// A VM of that name exists already, following a libvirt domain.
    #[error("a VM named {name:?} already exists: it follows libvirt domain {name:?} ({domain}) of {uri}; choose another name, or rename the domain")]
    DuplicateDomainVm {
        /// The name.
        name: String,
        /// The domain's UUID, the VM's id.
        domain: uuid::Uuid,
        /// The libvirt it came from.
        uri: String,
    },
    /// No service with that GUID.
    #[error("no guest communication service {0} is registered (see `guestcomm service list`)")]
    UnknownService(ServiceId),
    /// The GUID is registered already.
    #[error("guest communication service {0} is already registered")]
    DuplicateService(ServiceId),
    /// A key to add is in the VM's external pool already.
    #[error("key {0:?} is in the external pool already (change it instead of adding it)")]
    KvpExists(String),
    /// Built-in services cannot be unregistered, only disabled.
    #[error("service {0} is built into guestcomm and cannot be unregistered; disable it instead")]
    Builtin(ServiceId),
    /// The database was written by a newer guestcommd.
    #[error("the state database has schema version {found}, newer than this guestcommd ({known})")]
    TooNew {
        /// Version in the file.
        found: u32,
        /// Newest version known here.
        known: u32,
    },
    /// The database file could not be created or protected.
    #[error("cannot create the state database {0} with mode 0600")]
    File(String, #[source] std::io::Error),
    /// A key-value change broke a rule of the pools.
    #[error(transparent)]
    Kvp(#[from] KvpError),
    /// Another process holds the database (module doc: one daemon owns it).
    #[error("the state database {0} is in use by another process (is another guestcommd running with this --state directory?)")]
    InUse(String),
    /// SQLite failed.
    #[error("state database error")]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// What the failure means to a caller.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownVm(_) | Self::UnknownService(_) => ErrorKind::NotFound,
            Self::DuplicateVm(_)
            | Self::DuplicateDomainVm { .. }
            | Self::DuplicateService(_)
            | Self::KvpExists(_) => ErrorKind::Conflict,
            Self::Builtin(_) => ErrorKind::Builtin,
            Self::Kvp(e) => ErrorKind::of_agent_code(e.code()),
            Self::TooNew { .. } | Self::File(..) | Self::InUse(_) | Self::Sqlite(_) => {
                ErrorKind::Internal
            }
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::Store(Classified::new(e.kind(), e))
    }
}
