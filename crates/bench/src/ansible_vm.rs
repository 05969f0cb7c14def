//! Case I (Ansible): the same play of ten tasks (`crates/bench/ansible/bench.yml`:
//! file, command, stdin, a 10 MiB copy in, stat, template, lineinfile, the
//! 10 MiB fetched back, shell, clean-up) run whole with `ansible-playbook`
//! through each connection, its wall time measured per play:
//! - the collection's `guestcomm.guestcomm.guestcomm` connection, straight to
//!   the agent in the test VM (`scripts/vm/build-image --with-python`,
//!   target/vm-python) over vhost-device-vsock, with the VM's key;
//! - the same connection to an agent on this host (a Unix socket), and
//!   `ssh` with Ansible's ControlPersist to a throwaway sshd on this host's
//!   loopback (module `ssh`): the test VM has no sshd, so guestcomm and ssh
//!   are compared like for like on the host, without TCG;
//! - `community.libvirt.libvirt_qemu` (through qemu-ga) to the libvirt
//!   domain named by `--libvirt-domain`, when that collection is installed.
//!
//! A leg that cannot run here is reported as not available, with why. One
//! unmeasured play per leg first, then [`ROUNDS`] measured ones.
//!
//! The chart (`ansible-vm.png`) follows the targets: on this host ssh's
//! play over the guestcomm connection's, in the TCG guest libvirt_qemu's
//! over guestcomm's; a panel whose baseline did not run is left out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use guestcomm_vmtest::{run_with_deadline, GuestEntropy, Vm, VmSpec};

use crate::agent::AgentGuard;
use crate::ratio::{Panel, RatioChart};
use crate::report::Machine;
use crate::ssh::{self, Sshd};
use crate::stats::Samples;

/// Measured plays per leg.
pub(crate) const ROUNDS: usize = 3;
/// Target: libvirt_qemu's play at least this many times guestcomm's.
const TARGET_TIMES_LIBVIRT: f64 = 5.0;
/// The file copied in and fetched back.
const PAYLOAD_BYTES: u64 = 10 * 1024 * 1024;
/// One play: ten Python modules under TCG.
const PLAY_DEADLINE: Duration = Duration::from_secs(600);
/// Guest memory: the image, Python, two copies of the payload on tmpfs.
const GUEST_MEMORY_MIB: u32 = 512;
/// Where the guest finds Python (build-image --with-python).
const GUEST_PYTHON: &str = "/usr/bin/python3";
/// The play and its template.
const PLAYBOOK: &str = include_str!("../ansible/bench.yml");
const TEMPLATE: &str = include_str!("../ansible/bench.j2");

/// An ansible-core command: in GUESTCOMM_ANSIBLE_BIN, else from PATH.
fn ansible_command(name: &str) -> PathBuf {
    match std::env::var_os("GUESTCOMM_ANSIBLE_BIN") {
        Some(dir) => Path::new(&dir).join(name),
        None => PathBuf::from(name),
    }
}

/// Whether ansible-core and the Python image are here, or why not.
pub(crate) fn available(images: &Path) -> Result<(), String> {
    let found = Command::new(ansible_command("ansible-playbook"))
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return Err("ansible-core is not installed (pip install ansible-core; set GUESTCOMM_ANSIBLE_BIN to its bin directory)".into());
    }
    let manifest = std::fs::read_to_string(images.join("image.txt")).unwrap_or_default();
    if !manifest
        .lines()
        .any(|l| l == format!("python-path={GUEST_PYTHON}"))
    {
        return Err(format!(
            "no VM image with Python in {} (bash scripts/vm/build-image --with-python)",
            images.display()
        ));
    }
    Ok(())
}

/// One connection's plays, or why it did not run.
pub(crate) struct Leg {
    pub(crate) name: &'static str,
    pub(crate) plays: Result<Samples, String>,
}

/// What case I measured.
pub(crate) struct AnsibleVm {
    pub(crate) legs: Vec<Leg>,
    pub(crate) ansible: String,
    pub(crate) kernel: String,
}

/// The collection installed, the play and its files, in one directory.
struct Controller {
    dir: tempfile::TempDir,
}

impl Controller {
    fn new() -> anyhow::Result<Self> {
        let controller = Self {
            dir: tempfile::Builder::new()
                .prefix("guestcomm-bench-ansible-")
                .tempdir()?,
        };
        for sub in ["build", "collections", "home", "local", "remote", "fetched"] {
            std::fs::create_dir(controller.path(sub))?;
        }
        std::fs::write(controller.path("bench.yml"), PLAYBOOK)?;
        std::fs::write(controller.path("bench.j2"), TEMPLATE)?;
        // Incompressible, as the copy cases' files: a copy must move every byte.
        crate::copy::make_file(&controller.path("payload.bin"), PAYLOAD_BYTES)?;
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../contrib/ansible/ansible_collections/guestcomm/guestcomm");
        controller.ok(
            "ansible-galaxy",
            &["collection", "build"],
            &[
                source.as_path(),
                Path::new("--output-path"),
                &controller.path("build"),
            ],
        )?;
        let tarball = controller.path("build/guestcomm-guestcomm-0.1.0.tar.gz");
        controller.ok(
            "ansible-galaxy",
            &["collection", "install"],
            &[
                tarball.as_path(),
                Path::new("-p"),
                &controller.path("collections"),
            ],
        )?;
        Ok(controller)
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(ansible_command(name));
        command
            .env("ANSIBLE_COLLECTIONS_PATH", self.path("collections"))
            .env("ANSIBLE_HOME", self.path("home"))
            .env("ANSIBLE_LOCAL_TEMP", self.path("local"))
            .env("ANSIBLE_REMOTE_TMP", self.path("remote"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", self.path("home"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_PIPELINING", "True")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .current_dir(self.dir.path());
        command
    }

    fn ok(&self, name: &str, first: &[&str], rest: &[&Path]) -> anyhow::Result<String> {
        let mut command = self.command(name);
        command.args(first).args(rest);
        let out = run_with_deadline(command, None, PLAY_DEADLINE)
            .with_context(|| format!("failed to run {name}"))?;
        ensure!(
            out.status.success(),
            "{name} {first:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the play against an inventory of one `line`, warm-up first,
    /// and returns the wall time of each measured play in ms.
    fn plays(&self, line: &str) -> anyhow::Result<Samples> {
        let inventory = self.path("hosts.ini");
        std::fs::write(&inventory, format!("{line}\n"))?;
        let extra = serde_json::json!({
            "dir": "/tmp/guestcomm-bench-ansible",
            "payload": self.path("payload.bin"),
            "fetched": self.path("fetched"),
        })
        .to_string();
        let mut samples = Samples::default();
        for round in 0..=ROUNDS {
            let start = Instant::now();
            self.ok(
                "ansible-playbook",
                &["-i"],
                &[
                    inventory.as_path(),
                    Path::new("-e"),
                    Path::new(&extra),
                    &self.path("bench.yml"),
                ],
            )?;
            if round > 0 {
                samples.push_ms(start.elapsed());
            }
        }
        Ok(samples)
    }
}

/// Runs the play through every connection that is here.
pub(crate) fn ansible_vm(
    host_agent: &AgentGuard,
    images: &Path,
    tool_dirs: Vec<PathBuf>,
    cli_bin: &Path,
    libvirt: Option<(&str, &str)>,
) -> anyhow::Result<AnsibleVm> {
    let controller = Controller::new()?;
    let ansible = controller
        .ok("ansible-playbook", &["--version"], &[])?
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let mut spec = VmSpec::new(images);
    spec.tool_dirs = tool_dirs;
    spec.memory_mib = GUEST_MEMORY_MIB;
    // Python's os.urandom() waits for the guest's random pool.
    spec.entropy = GuestEntropy::Rdrand;
    let vm = Vm::boot(&spec).map_err(|e| anyhow::anyhow!("the VM did not boot: {e}"))?;
    let guestcomm = controller.plays(&format!(
        "vm ansible_connection=guestcomm.guestcomm.guestcomm ansible_guestcomm_agent_address={} \
         ansible_guestcomm_identity={} ansible_guestcomm_path={} ansible_python_interpreter={GUEST_PYTHON}",
        vm.addr(),
        vm.identity().display(),
        cli_bin.display()
    ))?;
    let kernel = String::from_utf8_lossy(
        &run_with_deadline(
            {
                let mut c = Command::new(cli_bin);
                c.arg("exec")
                    .arg("--identity")
                    .arg(vm.identity())
                    .arg(vm.addr().to_string())
                    .args(["--", "uname", "-r"]);
                c
            },
            None,
            PLAY_DEADLINE,
        )?
        .stdout,
    )
    .trim()
    .to_string();
    drop(vm);
    let host = controller.plays(&format!(
        "host ansible_connection=guestcomm.guestcomm.guestcomm ansible_guestcomm_agent_address={} \
         ansible_guestcomm_path={} ansible_python_interpreter=/usr/bin/python3",
        host_agent.addr(),
        cli_bin.display()
    ))?;

    let ssh = match ssh::available() {
        Ok(()) => {
            let sshd = Sshd::start()?;
            Ok(controller.plays(&format!(
                "loopback ansible_connection=ssh ansible_host=127.0.0.1 ansible_port={} \
                 ansible_user=root ansible_ssh_private_key_file={} ansible_python_interpreter=/usr/bin/python3",
                sshd.port(),
                sshd.user_key().display()
            ))?)
        }
        Err(why) => Err(why),
    };
    let libvirt = match libvirt {
        None => Err("no --libvirt-domain given".to_string()),
        Some((uri, domain)) => {
            let installed = controller
                .ok(
                    "ansible-doc",
                    &["-t", "connection", "community.libvirt.libvirt_qemu"],
                    &[],
                )
                .is_ok();
            if installed {
                Ok(controller.plays(&format!(
                    "{domain} ansible_connection=community.libvirt.libvirt_qemu \
                     ansible_libvirt_uri={uri} ansible_python_interpreter={GUEST_PYTHON}"
                ))?)
            } else {
                Err("the community.libvirt collection is not installed".to_string())
            }
        }
    };
    Ok(AnsibleVm {
        legs: vec![
            Leg {
                name: "guestcomm connection, agent on this host (Unix socket)",
                plays: Ok(host),
            },
            Leg {
                name: "ssh + ControlPersist, this host's loopback sshd",
                plays: ssh,
            },
            Leg {
                name: "guestcomm connection, test VM (TCG) over vsock",
                plays: Ok(guestcomm),
            },
            Leg {
                name: "community.libvirt.libvirt_qemu (qemu-ga)",
                plays: libvirt,
            },
        ],
        ansible,
        kernel,
    })
}

impl AnsibleVm {
    /// The Markdown section, markers included.
    /// The median play of leg `i`, if it ran.
    fn median(&self, i: usize) -> Option<f64> {
        self.legs
            .get(i)
            .and_then(|l| l.plays.as_ref().ok())
            .map(Samples::median)
    }

    /// The chart of case I (`ansible-vm.png`): legs 1 and 3 over legs 0
    /// and 2, as the targets compare them.
    pub(crate) fn chart(&self) -> RatioChart {
        let panels = [
            (
                "on this host",
                "OpenSSH",
                (1.0, "ssh no faster than guestcomm".to_string()),
            ),
            (
                "in a TCG guest",
                "qemu-ga",
                (
                    TARGET_TIMES_LIBVIRT,
                    format!("libvirt_qemu ≥ {TARGET_TIMES_LIBVIRT}× guestcomm's time"),
                ),
            ),
        ];
        let mut out = Vec::new();
        for (i, (place, system, (at, target))) in panels.into_iter().enumerate() {
            let (base, peer) = (2 * i, 2 * i + 1);
            let Some(base_ms) = self.median(base) else {
                continue;
            };
            let mut panel = Panel::new(
                format!("one play of ten tasks {place}, median wall time"),
                "× the guestcomm connection's time (log scale; lower is better)",
            )
            .baseline(self.legs[base].name);
            if let Some(peer_ms) = self.median(peer) {
                panel = panel.bar(self.legs[peer].name, peer_ms / base_ms, system);
            }
            out.push(panel.target(&target, at));
        }
        RatioChart::new(
            "ansible-vm",
            "Ansible through guestcomm, ssh and libvirt",
            out,
        )
    }

    pub(crate) fn render(&self, m: &Machine, versions: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "<!-- bench:ansible-vm:begin -->");
        let _ = writeln!(
            o,
            "## Ansible: one play through guestcomm, ssh and libvirt\n"
        );
        let _ = writeln!(
            o,
            "Written by `target/release/guestcomm-bench --case ansible-vm --plots docs/img \
             --libvirt-uri URI --libvirt-domain guestcomm-bench --write docs/BENCHMARKS.md` after `cargo build \
             --release -p guestcomm-cli -p guestcomm-bench && cargo build --profile agent -p \
             guestcomm-agent && AGENT=target/agent/guestcomm-agent bash scripts/vm/build-image \
             --with-python` and `URI=$(bash scripts/bench-libvirt-domain start)` (method: \
             `crates/bench/src/ansible_vm.rs`; chart docs/img/ansible-vm.png: ssh's play over \
             guestcomm's on this host, libvirt_qemu's over guestcomm's in the guest; the play `crates/bench/ansible/bench.yml`: ten tasks, \
             a 10 MiB file copied in and fetched back, no fact gathering, pipelining on; Ansible \
             with its bundled collections and libvirt-python from PyPI). Wall time of one \
             `ansible-playbook` run, median of {ROUNDS} after one unmeasured run. The guests are the \
             test VM under TCG (kernel `{}`, 1 vCPU, {GUEST_MEMORY_MIB} MiB), so every Python module \
             in them runs emulated: the guestcomm connection over vsock to guestcomm-agent as it \
             ships, and `community.libvirt.libvirt_qemu` to Debian's qemu-ga on the same image booted \
             as a domain of a private session libvirtd (`scripts/bench-libvirt-domain`). The test VM \
             has no sshd, so guestcomm and ssh are compared like for like on this host: the guestcomm \
             connection to an agent on a Unix socket, and ssh to a throwaway sshd on the loopback. \
             The last column is each play's time over the first row's.\n",
            self.kernel
        );
        o.push_str(&m.table());
        let _ = writeln!(o, "\nVersions: {versions}; {}.\n", self.ansible);
        let _ = writeln!(
            o,
            "| connection | play, median | min | max | vs guestcomm |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|");
        let base = self
            .legs
            .first()
            .and_then(|l| l.plays.as_ref().ok())
            .map(Samples::median);
        for leg in &self.legs {
            match &leg.plays {
                Ok(s) => {
                    let ratio = base.map_or("-".to_string(), |b| format!("{:.2}x", s.median() / b));
                    let _ = writeln!(
                        o,
                        "| {} | {:.1} s | {:.1} s | {:.1} s | {ratio} |",
                        leg.name,
                        s.median() / 1000.0,
                        s.min() / 1000.0,
                        s.max() / 1000.0
                    );
                }
                Err(why) => {
                    let _ = writeln!(o, "| {} | not available: {why} | | | |", leg.name);
                }
            }
        }
        let median = |i: usize| self.median(i);
        let met = |ok: bool| if ok { "**met**" } else { "**missed**" };
        let _ = writeln!(
            o,
            "\n### Targets\n\n| target | measured | |\n|---|---:|---|"
        );
        match (median(0), median(1)) {
            (Some(ours), Some(ssh)) => {
                let _ = writeln!(
                    o,
                    "| no slower than ssh with ControlPersist (this host) | ssh takes {:.2}x guestcomm's time | {} |",
                    ssh / ours,
                    met(ssh >= ours)
                );
            }
            _ => {
                let _ = writeln!(
                    o,
                    "| no slower than ssh with ControlPersist | not measured | |"
                );
            }
        }
        match (median(2), median(3)) {
            (Some(ours), Some(qga)) => {
                let _ = writeln!(
                    o,
                    "| at least 5x faster than libvirt_qemu (both in a TCG guest) | libvirt_qemu takes {:.2}x guestcomm's time | {} |",
                    qga / ours,
                    met(qga >= TARGET_TIMES_LIBVIRT * ours)
                );
            }
            _ => {
                let _ = writeln!(
                    o,
                    "| at least 5x faster than libvirt_qemu | not measured | |"
                );
            }
        }
        let _ = writeln!(o, "\n<!-- bench:ansible-vm:end -->");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_has_ratios_and_says_why_a_leg_did_not_run() {
        let plays = |ms: &[f64]| {
            let mut s = Samples::default();
            for &v in ms {
                s.push(v);
            }
            s
        };
        let i = AnsibleVm {
            legs: vec![
                Leg {
                    name: "guestcomm",
                    plays: Ok(plays(&[4000.0, 5000.0, 6000.0])),
                },
                Leg {
                    name: "ssh",
                    plays: Ok(plays(&[2000.0, 2500.0, 3000.0])),
                },
                Leg {
                    name: "libvirt",
                    plays: Err("no --libvirt-domain given".into()),
                },
            ],
            ansible: "ansible-playbook [core 2.19.14]".into(),
            kernel: "6.1.0-57-cloud-amd64".into(),
        };
        let text = i.render(&Machine::probe(), "guestcomm 0.1.0");
        assert!(text.starts_with("<!-- bench:ansible-vm:begin -->\n"));
        assert!(text.ends_with("<!-- bench:ansible-vm:end -->\n"));
        assert!(
            text.contains("| guestcomm | 5.0 s | 4.0 s | 6.0 s | 1.00x |"),
            "{text}"
        );
        assert!(
            text.contains("| ssh | 2.5 s | 2.0 s | 3.0 s | 0.50x |"),
            "{text}"
        );
        assert!(text.contains("| libvirt | not available: no --libvirt-domain given |"));
        assert!(text.contains("chart docs/img/ansible-vm.png"));
    }

    #[test]
    fn the_chart_compares_the_legs_the_targets_compare() {
        let plays = |ms: f64| -> Result<Samples, String> { Ok([ms].into_iter().collect()) };
        let leg = |name, plays| Leg { name, plays };
        let mut i = AnsibleVm {
            legs: vec![
                leg("guestcomm host", plays(5000.0)),
                leg("ssh", plays(10_000.0)),
                leg("guestcomm vm", plays(40_000.0)),
                leg("libvirt", plays(60_000.0)),
            ],
            ansible: String::new(),
            kernel: String::new(),
        };
        let chart = i.chart();
        assert_eq!(chart.file_name(), "ansible-vm.png");
        let [host, guest] = &chart.panels[..] else {
            panic!("{chart:?}")
        };
        assert_eq!(host.ratio_of("baseline: guestcomm host"), Some(1.0));
        assert_eq!(host.ratio_of("ssh"), Some(2.0));
        assert_eq!(guest.ratio_of("baseline: guestcomm vm"), Some(1.0));
        assert_eq!(guest.ratio_of("libvirt"), Some(1.5));
        assert_eq!(guest.targets[0].at, TARGET_TIMES_LIBVIRT);
        // Without the guest's guestcomm leg there is no baseline in the guest.
        i.legs[2].plays = Err("no image".into());
        let chart = i.chart();
        assert_eq!(chart.panels.len(), 1);
        assert_eq!(chart.panels[0].ratio_of("ssh"), Some(2.0));
    }
}
