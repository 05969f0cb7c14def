//! `guestcomm vm add|list|show|rm`: the daemon's VM inventory.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use guestcomm_api::Method;
use guestcomm_api::{AddVm, Credentials, DomainKey, NewCredentials, UpdateVm, Vm};
use guestcomm_protocol::auth::{load_credentials, Psk};
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
    /// Add a VM: a name and its agent's address. Prints the VM's id; a
    /// VM with a key also needs that key in its guest: give the delivery
    /// options of `vm credentials` here (e.g. `--qemu-args --guest-file
    /// PATH`) and the line to add to the VM's definition is printed after
    /// the id.
    ///
    /// Examples:
    ///   guestcomm vm add web1 --endpoint vsock://5
    ///   guestcomm vm add web1 --endpoint vsock://5 --qemu-args --guest-file /var/lib/guestcomm/keys/web1.key
    ///   guestcomm vm add web1 --endpoint vsock://5 --libvirt-xml --guest-file /var/lib/libvirt/qemu/web1.key
    #[command(verbatim_doc_comment)]
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
        /// Where the new VM's key goes (as `vm credentials`).
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// Deliver a VM's key to its guest: write it to a file, or print what
    /// to add to the VM's definition so that the guest finds it at boot as
    /// the systemd credential guestcomm.key (the agent looks there itself).
    ///
    /// Examples:
    ///   guestcomm vm credentials web1 --guest-file /root/web1.key
    ///   guestcomm vm credentials web1 --qemu-args --guest-file /var/lib/guestcomm/keys/web1.key
    ///   guestcomm vm credentials web1 --qemu-args --smbios --guest-file /var/lib/guestcomm/keys/web1.oem
    ///   guestcomm vm credentials web1 --libvirt-xml --guest-file /var/lib/libvirt/qemu/web1.key
    ///   guestcomm vm credentials web1 --cloud-init > user-data
    #[command(verbatim_doc_comment)]
    Credentials(CredentialsArgs),
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

/// `vm credentials`: a VM and where its key goes.
#[derive(Debug, Args)]
pub(crate) struct CredentialsArgs {
    /// The VM.
    name: String,
    /// Where the key goes.
    #[command(flatten)]
    delivery: DeliveryArgs,
}

/// Where a VM's key goes (`vm credentials`, and `vm add` for a new VM).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("form").args(["qemu_args", "libvirt_xml", "cloud_init", "kernel_cmdline"])))]
pub(crate) struct DeliveryArgs {
    /// Write the key to this new file (mode 0600; an existing file is not
    /// overwritten): alone, for `guestcomm-agent --credentials`; with
    /// --qemu-args or --libvirt-xml, the file QEMU reads (its user must be
    /// able to read it).
    #[arg(long, value_name = "PATH")]
    guest_file: Option<std::path::PathBuf>,
    /// Print the QEMU options that deliver the key: a firmware configuration
    /// entry read from --guest-file; with --smbios an SMBIOS type 11 string
    /// (from --guest-file, or else on QEMU's command line itself, which every
    /// host user can read).
    #[arg(long)]
    qemu_args: bool,
    /// Print the libvirt domain XML that delivers the key: a firmware
    /// configuration entry read from --guest-file; with --smbios an SMBIOS
    /// type 11 string inside the XML.
    #[arg(long)]
    libvirt_xml: bool,
    /// Print a cloud-init document (user data) that writes the key into
    /// the guest's credential store, for clouds without fw_cfg or SMBIOS.
    #[arg(long)]
    cloud_init: bool,
    /// Refused: every user in the guest can read the kernel command line.
    #[arg(long)]
    kernel_cmdline: bool,
    /// With --qemu-args or --libvirt-xml: SMBIOS type 11 instead of fw_cfg
    /// (machines without fw_cfg).
    #[arg(long)]
    smbios: bool,
}

impl DeliveryArgs {
    /// Whether any delivery was asked for.
    fn asked(&self) -> bool {
        self.guest_file.is_some()
            || self.qemu_args
            || self.libvirt_xml
            || self.cloud_init
            || self.kernel_cmdline
            || self.smbios
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
        VmCommand::Credentials(args) => {
            check_delivery(&args.delivery)?;
            return deliver_credentials(ctx, &args.name, &args.delivery).await;
        }
        VmCommand::Add {
            name,
            endpoint,
            delivery,
            ..
        } => {
            api::vm_path(&name)?;
            let deliver = delivery.asked();
            if deliver {
                if matches!(key, NewCredentials::None) {
                    return Err(Failure::usage(
                        "--no-credentials leaves no key to deliver: drop the delivery options"
                            .into(),
                    ));
                }
                check_delivery(&delivery)?;
            }
            let body = AddVm {
                name,
                endpoint: endpoint.to_string(),
                credentials: key,
            };
            let vm: Vm = client.send(Method::POST, "/v1/vms", &body).await?;
            println!("{}", vm.id);
            if deliver {
                if !vm.authenticated {
                    return Err(Failure::usage(format!(
                        "VM {} was added without a key, so there is none to deliver (unix and \
                         tcp endpoints get one only with --generate-credentials)",
                        Escaped(&vm.name)
                    )));
                }
                return deliver_credentials(ctx, &vm.name, &delivery).await;
            }
            if vm.authenticated {
                eprintln!(
                    "note: the guest needs VM {}'s key at boot; `guestcomm vm credentials {} \
                     --qemu-args --guest-file PATH` (or --libvirt-xml, --cloud-init) writes it \
                     and prints what to add to the VM's definition",
                    Escaped(&vm.name),
                    Escaped(&vm.name)
                );
            }
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
            if let Some(key) = &vm.domain_key {
                let meaning = match key {
                    DomainKey::InRunningDomain => "the running domain carries the key",
                    DomainKey::RestartNeeded => {
                        "in the domain's definition only: shut it down and start it again"
                    }
                    DomainKey::AtNextStart => {
                        "in the domain's definition: the guest reads it at start"
                    }
                    DomainKey::NotInDomain => {
                        "not in the domain: deliver it with vm credentials --libvirt-xml"
                    }
                    DomainKey::Other(_) => "",
                };
                println!("Domain key: {} ({meaning})", Escaped(key.as_str()));
            }
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

/// What `vm credentials` prints, and the file it writes first, if any.
struct Delivery {
    /// The file and its content.
    file: Option<(std::path::PathBuf, Vec<u8>)>,
    /// What goes to stdout.
    printed: Option<String>,
    /// A caution for stderr.
    caution: Option<&'static str>,
}

/// The delivery `args` ask for, refused before anything is written when
/// the arguments do not fit together.
fn delivery(args: &DeliveryArgs, psk: &Psk) -> Result<Delivery, Failure> {
    use guestcomm_client::provision;
    use guestcomm_protocol::auth::credentials_text;

    if args.kernel_cmdline {
        return Err(Failure::usage(provision::KERNEL_CMDLINE_REFUSAL.into()));
    }
    if args.smbios && !(args.qemu_args || args.libvirt_xml) {
        return Err(Failure::usage(
            "--smbios goes with --qemu-args or --libvirt-xml".into(),
        ));
    }
    let absolute = |path: &std::path::Path| {
        std::path::absolute(path)
            .with_context(|| format!("cannot make {} absolute", path.display()))
            .map_err(|e| Failure::failed(&e))
    };
    let provisioning = |e: provision::ProvisionError| Failure::usage(e.to_string());
    let needs_file = |what: &str| {
        Failure::usage(format!(
            "{what} reads the key from a file on the host: give --guest-file PATH \
             (a new file, readable by QEMU's user), or use --smbios"
        ))
    };
    let credentials = || credentials_text(psk).into_bytes();
    let no_file = |what: &str| {
        if args.guest_file.is_some() {
            Err(Failure::usage(format!(
                "{what} carries the key itself: drop --guest-file"
            )))
        } else {
            Ok(())
        }
    };
    let plain = |printed: String, file: Option<(std::path::PathBuf, Vec<u8>)>| Delivery {
        file,
        printed: Some(printed),
        caution: None,
    };
    Ok(match (args.qemu_args, args.libvirt_xml, args.cloud_init, args.smbios) {
        (true, _, _, false) => {
            let path = absolute(args.guest_file.as_deref().ok_or_else(|| needs_file("fw_cfg"))?)?;
            let printed = provision::qemu_fw_cfg(&path).map_err(provisioning)?.join(" ");
            plain(printed, Some((path, credentials())))
        }
        (true, _, _, true) => match &args.guest_file {
            Some(path) => {
                let path = absolute(path)?;
                let printed = provision::qemu_smbios_file(&path).map_err(provisioning)?.join(" ");
                plain(printed, Some((path, provision::smbios_oem_string(psk).into_bytes())))
            }
            None => Delivery {
                file: None,
                printed: Some(provision::qemu_smbios_inline(psk).join(" ")),
                caution: Some(
                    "the key is on QEMU's command line, which every user of this host can read \
                     (ps); with --guest-file PATH QEMU reads it from a file instead",
                ),
            },
        },
        (_, true, _, false) => {
            let path = absolute(args.guest_file.as_deref().ok_or_else(|| needs_file("fw_cfg"))?)?;
            let printed = provision::libvirt_fw_cfg(&path).map_err(provisioning)?;
            plain(printed, Some((path, credentials())))
        }
        (_, true, _, true) => {
            no_file("libvirt's SMBIOS OEM string")?;
            Delivery {
                file: None,
                printed: Some(provision::libvirt_smbios(psk)),
                caution: Some(
                    "the key is in the domain's XML, which every libvirt client allowed to read \
                     this domain can see; fw_cfg (without --smbios) keeps it in a root-only file",
                ),
            }
        }
        (_, _, true, _) => {
            no_file("the cloud-init document")?;
            Delivery {
                file: None,
                printed: Some(provision::cloud_init(psk)),
                caution: Some(
                    "cloud user data is often readable by every process in the guest (the \
                     metadata service); prefer --qemu-args or --libvirt-xml where the \
                     hypervisor has fw_cfg or SMBIOS",
                ),
            }
        }
        (false, false, false, _) => match &args.guest_file {
            Some(path) => Delivery {
                file: Some((path.clone(), credentials())),
                printed: None,
                caution: None,
            },
            None => {
                return Err(Failure::usage(
                    "say where the key goes: --guest-file PATH (for the agent's --credentials), \
                     --qemu-args, --libvirt-xml or --cloud-init"
                        .into(),
                ))
            }
        },
    })
}

/// Refuses delivery arguments that do not fit together before the daemon
/// is asked anything (the form is rendered with a placeholder key and
/// thrown away).
fn check_delivery(args: &DeliveryArgs) -> Result<(), Failure> {
    let placeholder = Psk::from_hex(&"00".repeat(32))
        .context("the placeholder key")
        .map_err(|e| Failure::failed(&e))?;
    delivery(args, &placeholder).map(drop)
}

/// `vm credentials NAME ...` (and `vm add` with delivery options): fetches
/// the key, writes the file the form needs, then prints the form. The
/// arguments were checked by [`check_delivery`].
async fn deliver_credentials(
    ctx: &Context,
    name: &str,
    args: &DeliveryArgs,
) -> Result<ExitCode, Failure> {
    let client = ctx.api()?;
    let creds: Credentials = client
        .get(&format!("{}/credentials", api::vm_path(name)?))
        .await?;
    let psk = Psk::from_hex(&creds.key)
        .context("guestcommd sent an invalid key")
        .map_err(|e| Failure::failed(&e))?;
    let delivery = delivery(args, &psk)?;
    if let Some((path, bytes)) = &delivery.file {
        guestcomm_protocol::auth::write_private_file(path, bytes)
            .with_context(|| format!("failed to write the guest file {}", path.display()))
            .map_err(|e| Failure::failed(&e))?;
        if delivery.printed.is_some() {
            eprintln!(
                "wrote VM {name}'s key to {} (mode 0600): QEMU's user must be able to read it",
                path.display()
            );
        } else {
            eprintln!(
                "wrote VM {name}'s key to {}: start the agent in the guest with --credentials pointing at it",
                path.display()
            );
        }
    }
    if let Some(caution) = delivery.caution {
        eprintln!("note: {caution}");
    }
    if let Some(printed) = delivery.printed {
        print!("{printed}");
        if !printed.ends_with('\n') {
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}
