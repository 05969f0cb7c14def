//! `guestcomm vm add|list|show|rm`: the daemon's VM inventory.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use guestcomm_api::Method;
use guestcomm_api::{AddVm, UpdateVm, Vm};
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
    match exec(args, api).await {
        Ok(code) => code,
        Err(e) => api::report(&e, FAILED),
    }
}

async fn exec(args: VmArgs, api: Option<&str>) -> Result<ExitCode, guestcomm_api::ApiError> {
    let client = api::client(api)?;
    Ok(match args.command {
        VmCommand::Add { name, endpoint } => {
            api::vm_path(&name)?;
            let body = AddVm {
                name,
                endpoint: endpoint.to_string(),
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
            println!("Name:       {}", vm.name);
            println!("ID:         {}", vm.id);
            println!("Endpoint:   {}", vm.endpoint);
            println!(
                "Interface:  {} (default policy {})",
                if vm.interface_enabled {
                    "enabled"
                } else {
                    "disabled"
                },
                vm.default_enabled_state_policy
            );
            println!("Status:     {}", vm.health.status);
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
