//! The one high-level value a command runs with, built once from the
//! command line by `run` (lib.rs) and passed by reference: where the
//! daemon's API is and with which TLS files (its client made on first use,
//! so commands that never ask the daemon never read them), the key file for
//! agent addresses, and whether to print JSON.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use guestcomm_api::tls::ClientTlsFiles;
use guestcomm_api::{ApiClient, ApiError, DEFAULT_API_ADDRESS};

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Tables and reports for people.
    Text,
    /// JSON (`--json`).
    Json,
}

/// Everything a command needs besides its own arguments.
#[derive(Debug)]
pub(crate) struct Context {
    api_address: String,
    tls: Option<ClientTlsFiles>,
    api: OnceLock<ApiClient>,
    identity: Option<PathBuf>,
    output: Output,
}

impl Context {
    /// `api`: `--api` (the default socket when absent); `tls`: the files of
    /// `--api-cert`, `--api-key` and `--api-ca`; `identity`: the command's
    /// `--identity`; `output`: its `--json`.
    pub(crate) fn new(
        api: Option<String>,
        tls: Option<ClientTlsFiles>,
        identity: Option<PathBuf>,
        output: Output,
    ) -> Self {
        Self {
            api_address: api.unwrap_or_else(|| DEFAULT_API_ADDRESS.into()),
            tls,
            api: OnceLock::new(),
            identity,
            output,
        }
    }

    /// The client of guestcommd's API, made on first use.
    pub(crate) fn api(&self) -> Result<&ApiClient, ApiError> {
        if let Some(client) = self.api.get() {
            return Ok(client);
        }
        let client = ApiClient::with_tls(&self.api_address, self.tls.as_ref())?;
        Ok(self.api.get_or_init(|| client))
    }

    /// The key file shared with an agent (`--identity`).
    pub(crate) fn identity(&self) -> Option<&Path> {
        self.identity.as_deref()
    }

    /// Whether to print JSON.
    pub(crate) fn json(&self) -> bool {
        self.output == Output::Json
    }
}
