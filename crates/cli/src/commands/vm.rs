//! `guestcomm vm add|list|show|rm`: the daemon's VM inventory.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use guestcomm_api::Method;
use guestcomm_api::{AddVm, Credentials, NewCredentials, UpdateVm, Vm};
use guestcomm_protocol::auth::{load_credentials, write_credentials, Psk};
use guestcomm_protocol::text::Escaped;
use guestcomm_transport::Address;

use super::api::{self, FAILED};

/// Manage the VMs known to guestcommd.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: VmCommand,
}

/// The `vm` subcommands.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
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

/// Enabled or disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On (CIM 2).
    Enabled,
    /// Off (CIM 3).
    Disabled,
}

/// Runs `guestcomm vm ...`.
pub async fn run(args: VmArgs, api: Option<&str>) -> ExitCode {
    let key = match new_key(&args.command) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("guestcomm: {}", Escaped(&format!("{e:#}")));
            return ExitCode::from(FAILED);
        }
    };
    if let VmCommand::Credentials { name, guest_file } = &args.command {
        return write_guest_credentials(api, name, guest_file).await;
    }
    match exec(args, key, api).await {
        Ok(code) => code,
        Err(e) => api::report(&e, FAILED),
    }
}

async fn exec(
    args: VmArgs,
    key: NewCredentials,
    api: Option<&str>,
) -> Result<ExitCode, guestcomm_api::ApiError> {
    let client = api::client(api)?;
    Ok(match args.command {
        VmCommand::Credentials { .. } => unreachable!("handled in run"),
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
        VmCommand::List { json } => {
            let vms: Vec<Vm> = client.get("/v1/vms").await?;
            let header = ["NAME", "ID", "ENDPOINT", "STATUS"];
            api::print_list(&vms, json, &header, |v| {
                vec![
                    v.name.clone(),
                    v.id.to_string(),
                    v.endpoint.clone(),
                    v.health.status.clone(),
                ]
            })
        }
        VmCommand::Show { name, json } => {
            let vm: Vm = client.get(&api::vm_path(&name)?).await?;
            if json {
                return Ok(api::print_json(&vm));
            }
            println!("Name:       {}", Escaped(&vm.name));
            println!("ID:         {}", vm.id);
            println!("Endpoint:   {}", Escaped(&vm.endpoint));
            println!(
                "Interface:  {} (default policy {})",
                if vm.interface_enabled {
                    "enabled"
                } else {
                    "disabled"
                },
                vm.default_enabled_state_policy
            );
            println!("Status:     {}", Escaped(&vm.health.status));
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
    api: Option<&str>,
    name: &str,
    file: &std::path::Path,
) -> ExitCode {
    let fetched = async {
        let client = api::client(api)?;
        client
            .get::<Credentials>(&format!("{}/credentials", api::vm_path(name)?))
            .await
    };
    let creds = match fetched.await {
        Ok(creds) => creds,
        Err(e) => return api::report(&e, FAILED),
    };
    let written = Psk::from_hex(&creds.key)
        .context("guestcommd sent an invalid key")
        .and_then(|psk| write_credentials(file, &psk).context("failed to write the guest file"));
    match written {
        Ok(()) => {
            eprintln!(
                "wrote VM {name}'s key to {}: start the agent in the guest with --credentials pointing at it",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("guestcomm: {}", Escaped(&format!("{e:#}")));
            ExitCode::from(FAILED)
        }
    }
}
