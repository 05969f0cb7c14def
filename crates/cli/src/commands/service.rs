//! `guestcomm service register|unregister|list|enable|disable`: the
//! registry of guest communication services and their enablement.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use guestcomm_api::{
    ApiError, GuestCommunicationService, Method, RegisterService, ServiceRegistration, SetPolicy,
};
use guestcomm_protocol::{BuiltinService, ServiceId};

use crate::api;
use crate::context::Context;
use crate::exit::Failure;
use crate::output;

/// Manage the registered guest communication services.
///
/// A service is named by its GUID; built-in services may also be named by
/// their short name (exec, files, kvp, ...). A service passes to a VM only
/// when it is registered and enabled: host-wide, on the VM's guest service
/// interface, and by its policy on that VM (enabled, disabled, or deferred
/// to the VM's default).
#[derive(Debug, Args)]
pub(crate) struct ServiceArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: ServiceCommand,
}

/// The `service` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Register a service GUID.
    Register {
        /// The service GUID.
        #[arg(value_name = "GUID", value_parser = parse_service)]
        id: ServiceId,
        /// Friendly name (ElementName).
        #[arg(long, value_name = "ELEMENTNAME")]
        name: String,
        /// Free text.
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
        /// Relay guest-initiated connections to this host address
        /// (unix:///PATH or tcp://IP:PORT); hybrid vsock VMs only.
        #[arg(long, value_name = "ADDR")]
        host_endpoint: Option<guestcomm_transport::Address>,
    },
    /// Unregister a service (built-in services can only be disabled).
    Unregister {
        /// The service GUID.
        #[arg(value_name = "GUID", value_parser = parse_service)]
        id: ServiceId,
    },
    /// List the registrations, or with --vm the services' state on one VM.
    #[command(alias = "ls")]
    List {
        /// Show the Msvm_GuestCommunicationService instances of this VM.
        #[arg(long, value_name = "VM")]
        vm: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Enable a service on one VM (--vm) or host-wide.
    Enable(PolicyArgs),
    /// Disable a service on one VM (--vm) or host-wide.
    Disable(PolicyArgs),
    /// Let a service follow the VM's default policy again.
    Defer {
        /// The service.
        #[arg(value_name = "GUID", value_parser = parse_service)]
        id: ServiceId,
        /// The VM.
        #[arg(long, value_name = "VM")]
        vm: String,
    },
}

impl ServiceCommand {
    /// Whether to print JSON (`list --json`).
    pub(crate) fn json(&self) -> bool {
        matches!(self, ServiceCommand::List { json: true, .. })
    }
}

/// Which service, and where.
#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// The service GUID (or a built-in's short name).
    #[arg(value_name = "GUID", value_parser = parse_service)]
    pub(crate) id: ServiceId,
    /// Only on this VM; without it the host-wide switch changes.
    #[arg(long, value_name = "VM")]
    pub(crate) vm: Option<String>,
}

/// A GUID, or the short name of a built-in service.
fn parse_service(text: &str) -> Result<ServiceId, String> {
    if let Some(s) = BuiltinService::ALL.iter().find(|s| s.name() == text) {
        return Ok(s.id());
    }
    text.parse()
        .map_err(|e: guestcomm_protocol::service::ServiceIdError| e.to_string())
}

fn state_name(value: u16) -> &'static str {
    match value {
        2 => "Enabled",
        3 => "Disabled",
        8 => "Deferred",
        _ => "Unknown",
    }
}

async fn set_policy(
    client: &guestcomm_api::ApiClient,
    id: ServiceId,
    vm: Option<String>,
    policy: u16,
) -> Result<ExitCode, ApiError> {
    if let Some(vm) = &vm {
        api::vm_path(vm)?;
    }
    let path = format!("/v1/services/{id}/policy");
    let () = client
        .send(Method::PUT, &path, &SetPolicy { vm, policy })
        .await
        .or_else(empty_body)?;
    Ok(ExitCode::SUCCESS)
}

/// A 204 answer has no JSON to decode: that is success.
fn empty_body(e: ApiError) -> Result<(), ApiError> {
    match e {
        ApiError::Decode(d) if d.is_eof() => Ok(()),
        other => Err(other),
    }
}

/// Runs `guestcomm service ...`.
pub(crate) async fn run(args: ServiceArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let client = ctx.api()?;
    Ok(match args.command {
        ServiceCommand::Register {
            id,
            name,
            description,
            host_endpoint,
        } => {
            let body = RegisterService {
                id: id.to_string(),
                element_name: name,
                description,
                host_endpoint: host_endpoint.map(|a| a.to_string()),
            };
            let _: ServiceRegistration = client.send(Method::POST, "/v1/services", &body).await?;
            ExitCode::SUCCESS
        }
        ServiceCommand::Unregister { id } => {
            client.delete(&format!("/v1/services/{id}")).await?;
            ExitCode::SUCCESS
        }
        ServiceCommand::List { vm: None, .. } => {
            let list: Vec<ServiceRegistration> = client.get("/v1/services").await?;
            let header = ["GUID", "ELEMENTNAME", "KIND", "HOST-WIDE"];
            output::print_list(ctx, &list, &header, |s| {
                vec![
                    s.id.to_string(),
                    s.element_name.clone(),
                    if s.builtin { "built-in" } else { "registered" }.into(),
                    if s.enabled { "Enabled" } else { "Disabled" }.into(),
                ]
            })?
        }
        ServiceCommand::List { vm: Some(vm), .. } => {
            let path = format!("{}/services", api::vm_path(&vm)?);
            let list: Vec<GuestCommunicationService> = client.get(&path).await?;
            let header = ["GUID", "ELEMENTNAME", "STATE", "POLICY", "STATUS"];
            output::print_list(ctx, &list, &header, |s| {
                vec![
                    s.name.clone(),
                    s.element_name.clone(),
                    state_name(s.enabled_state).into(),
                    state_name(s.requested_state).into(),
                    s.status.clone(),
                ]
            })?
        }
        ServiceCommand::Enable(p) => set_policy(client, p.id, p.vm, 2).await?,
        ServiceCommand::Disable(p) => set_policy(client, p.id, p.vm, 3).await?,
        ServiceCommand::Defer { id, vm } => set_policy(client, id, Some(vm), 8).await?,
    })
}
