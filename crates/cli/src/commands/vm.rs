//! `guestcomm vm add|list|show|rm`: the daemon's VM inventory.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use guestcomm_api::Method;
use guestcomm_api::{AddVm, Credentials, NewCredentials, UpdateVm, Vm};
use guestcomm_protocol::auth::{load_credentials, write_credentials, Psk};
use guestcomm_protocol::text::Escaped;
use guestcomm_transport::Address;

use crate::api;
use crate::context::Context;
use crate::exit::Failure;
use crate::output;

/// Manage the VMs known to guestcommd.
#[derive(Debug, Args)]
pub(crate) struct VmArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: VmCommand,
}

/// The `vm` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum VmCommand {
    /// Add a VM: a name and its agent's address.
    Add {
        /// Unique name: letters, digits, '-', '_', '.' (up to 63).
        name: String,
        /// The agent's address: vsock://CID[:PORT], hvsock-uds:///PATH[?port=PORT],
        /// unix:///PATH or tcp://IP:PORT.
        #[arg(long, value_name = "ADDR")]
        endpoint: Address,
        /// Use this existing key file (e.g. one baked into the VM's image)
        /// instead of a new key. By default vsock and hybrid vsock VMs get a
        /// new key (write its guest side with `vm credentials`); unix and tcp
        /// VMs get none.
        #[arg(long, value_name = "FILE", group = "key")]
        credentials: Option<std::path::PathBuf>,
        /// Create a new key even for a unix or tcp endpoint.
        #[arg(long, group = "key")]
        generate_credentials: bool,
        /// No key (unix and tcp endpoints only; their agents run without --credentials).
        #[arg(long, group = "key")]
        no_credentials: bool,
    },
    /// Write the guest side of a VM's key, for `guestcomm-agent --credentials`
    /// (place it in the guest with cloud-init, a config drive or the image).
    Credentials {
        /// The VM.
        name: String,
        /// Where to write it (mode 0600; an existing file is not overwritten).
        #[arg(long, value_name = "PATH")]
        guest_file: std::path::PathBuf,
    },
    /// List the VMs.
    #[command(alias = "ls")]
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one VM.
    Show {
        /// The VM.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a VM's guest service interface settings.
    Set {
        /// The VM.
        name: String,
        /// Turn the guest service interface on or off (off disables every service).
        #[arg(long, value_enum, value_name = "STATE")]
        interface: Option<Switch>,
        /// DefaultEnabledStatePolicy: the state of services whose policy is deferred.
        #[arg(long, value_enum, value_name = "STATE")]
        default_policy: Option<Switch>,
    },
    /// Remove a VM (and its service policies).
    #[command(alias = "remove")]
    Rm {
        /// The VM.
        name: String,
    },
}

impl VmCommand {
    /// Whether to print JSON (`list --json`, `show --json`).
    pub(crate) fn json(&self) -> bool {
        matches!(
            self,
            VmCommand::List { json: true } | VmCommand::Show { json: true, .. }
        )
    }
}

/// Enabled or disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Switch {
    /// On (CIM 2).
    Enabled,
    /// Off (CIM 3).
    Disabled,
}

/// Runs `guestcomm vm ...`.
pub(crate) async fn run(args: VmArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let key = new_key(&args.command).map_err(|e| Failure::failed(&e))?;
    let client = ctx.api()?;
    Ok(match args.command {
        VmCommand::Credentials { name, guest_file } => {
            return write_guest_credentials(ctx, &name, &guest_file).await
        }
        VmCommand::Add { name, endpoint, .. } => {
            api::vm_path(&name)?;
            let body = AddVm {
                name,
                endpoint: endpoint.to_string(),
                credentials: key,
            };
            let vm: Vm = client.send(Method::POST, "/v1/vms", &body).await?;
            println!("{}", vm.id);
            ExitCode::SUCCESS
        }
        VmCommand::List { .. } => {
            let vms: Vec<Vm> = client.get("/v1/vms").await?;
            let header = ["NAME", "ID", "ENDPOINT", "STATUS"];
            output::print_list(ctx, &vms, &header, |v| {
                vec![
                    v.name.clone(),
                    v.id.to_string(),
                    v.endpoint.to_string(),
                    v.health.status.to_string(),
                ]
            })?
        }
        VmCommand::Show { name, .. } => {
            let vm: Vm = client.get(&api::vm_path(&name)?).await?;
            if ctx.json() {
                return output::print_json(&vm);
            }
            println!("Name:       {}", Escaped(&vm.name));
            println!("ID:         {}", vm.id);
            println!("Endpoint:   {}", Escaped(&vm.endpoint.to_string()));
            println!(
                "Interface:  {} (default policy {})",
                if vm.interface_enabled {
                    "enabled"
                } else {
                    "disabled"
                },
                vm.default_enabled_state_policy
            );
            println!("Status:     {}", Escaped(vm.health.status.as_str()));
            println!(
                "Auth:       {}",
                if vm.authenticated {
                    "psk-hmac-sha256 (the agent must hold the VM's key)"
                } else {
                    "none"
                }
            );
            ExitCode::SUCCESS
        }
        VmCommand::Set {
            name,
            interface,
            default_policy,
        } => {
            let body = UpdateVm {
                interface_enabled: interface.map(|s| s == Switch::Enabled),
                default_enabled_state_policy: default_policy.map(|s| {
                    if s == Switch::Enabled {
                        2
                    } else {
                        3
                    }
                }),
            };
            let _: Vm = client
                .send(Method::PATCH, &api::vm_path(&name)?, &body)
                .await?;
            ExitCode::SUCCESS
        }
        VmCommand::Rm { name } => {
            client.delete(&api::vm_path(&name)?).await?;
            ExitCode::SUCCESS
        }
    })
}

/// The key choice of `vm add`; a key file is read here, by the caller
/// (the daemon may not be allowed to read the caller's files).
fn new_key(command: &VmCommand) -> anyhow::Result<NewCredentials> {
    Ok(match command {
        VmCommand::Add {
            credentials: Some(path),
            ..
        } => NewCredentials::Import {
            key: load_credentials(path)
                .context("failed to read --credentials")?
                .secret_hex(),
        },
        VmCommand::Add {
            generate_credentials: true,
            ..
        } => NewCredentials::Generate,
        VmCommand::Add {
            no_credentials: true,
            ..
        } => NewCredentials::None,
        _ => NewCredentials::Auto,
    })
}

/// `vm credentials NAME --guest-file PATH`.
async fn write_guest_credentials(
    ctx: &Context,
    name: &str,
    file: &std::path::Path,
) -> Result<ExitCode, Failure> {
    let client = ctx.api()?;
    let creds: Credentials = client
        .get(&format!("{}/credentials", api::vm_path(name)?))
        .await?;
    Psk::from_hex(&creds.key)
        .context("guestcommd sent an invalid key")
        .and_then(|psk| write_credentials(file, &psk).context("failed to write the guest file"))
        .map_err(|e| Failure::failed(&e))?;
    eprintln!(
        "wrote VM {name}'s key to {}: start the agent in the guest with --credentials pointing at it",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}
