//! The report of case K (guestcomm and OpenSSH in one TCG guest): the
//! Markdown section between `<!-- bench:ssh-vm:begin -->` and its end
//! marker, the targets, and the ratios for the chart (medians of per-round
//! ratios, see [`Samples::paired_ratio`]).

use std::fmt::Write as _;

use crate::compare::Row;
use crate::compare_vm_report::{advantage, advantages_over, short, throughput_table};
use crate::report::Machine;
use crate::ssh_vm::{GuestCpu, SshComparison, SSH_COLD_SAMPLES};
use crate::stats::format_bytes;
use crate::vm_guest::{COPY_BYTES, EXEC_SAMPLES, OUTPUT_BYTES, OUTPUT_COMMAND};

/// guestcomm's exec of `true` must take at most this share of ssh's
/// through a ControlMaster connection.
pub(crate) const TARGET_EXEC_OF_SSH_MASTER: f64 = 0.5;
/// `guestcomm cp` must move at least this many times scp's rate, each way.
pub(crate) const TARGET_TIMES_SCP: f64 = 2.0;

/// The row ssh's figures are compared with: the first OpenSSH row whose
/// path contains `key`.
fn ssh_row<'a>(rows: &'a [Row], key: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.system == "OpenSSH" && r.path.contains(key))
}

/// Each table's reference row for the ratio column.
const LATENCY_REFERENCE: &str = "ControlMaster";
const OUTPUT_REFERENCE: &str = "ControlMaster";
const COPY_REFERENCE: &str = "`scp` (SFTP";

impl SshComparison {
    /// guestcomm's advantage over ssh per workload and path, for the chart
    /// (latency inverted: more is better everywhere).
    pub(crate) fn advantages(&self) -> Vec<(String, f64)> {
        let tables: [(&str, &[Row], &str, bool); 4] = [
            (
                "exec `true` vs ssh with master",
                &self.latency,
                LATENCY_REFERENCE,
                true,
            ),
            (
                "command output vs ssh",
                &self.output,
                OUTPUT_REFERENCE,
                false,
            ),
            (
                "copy host → guest vs scp",
                &self.copy_to,
                COPY_REFERENCE,
                false,
            ),
            (
                "copy guest → host vs scp",
                &self.copy_from,
                COPY_REFERENCE,
                false,
            ),
        ];
        advantages_over(
            tables
                .into_iter()
                .map(|(workload, rows, key, lower)| (workload, rows, ssh_row(rows, key), lower)),
        )
    }

    /// The Markdown section, markers included; `versions` names every program.
    pub(crate) fn render(&self, m: &Machine, versions: &str) -> String {
        let mut o = String::new();
        let name = &self.section;
        let _ = writeln!(o, "<!-- bench:{name}:begin -->");
        let (title, option) = crate::vm_guest::cpu_model_notes(&self.cpu);
        let _ = writeln!(
            o,
            "## Side by side in a VM: guestcomm and OpenSSH, both over vsock{title}\n"
        );
        let _ = writeln!(
            o,
            "Written by `target/release/guestcomm-bench --case ssh-vm{option} --plots docs/img \
             --write docs/BENCHMARKS.md` after `cargo build --release -p guestcomm-cli -p \
             guestcomm-bench && RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile agent \
             --target x86_64-unknown-linux-gnu -p guestcomm-agent && bash \
             scripts/vm/build-image --with-sshd` (method: `crates/bench/src/ssh_vm.rs`; chart \
             docs/img/{name}.png). One QEMU guest under TCG (no KVM: every guest instruction is \
             emulated; 1 vCPU `-cpu {}`, 512 MiB, RDRAND on, since sshd needs randomness), \
             kernel `{}`, booted from an initramfs. In it \
             guestcomm-agent (`{}`, profile `agent`) listens on vsock port 18243 with the VM's \
             key, and Debian's sshd (`{}`) is started per vsock connection on port {} in inetd \
             mode (`socat VSOCK-LISTEN:{},fork EXEC:'sshd -i',nofork`, as systemd's \
             socket-activated sshd does), with a throwaway ed25519 host key and root's \
             authorized key. The host reaches both through the same vhost-device-vsock hybrid \
             socket: guestcomm directly, ssh with `ProxyCommand=guestcomm-bench --proxy-hvsock \
             SOCKET {}` (`CONNECT {}`, then raw bytes, as systemd-ssh-proxy does for AF_VSOCK; \
             `crates/bench/src/proxy.rs`), `-F /dev/null`, the image's known_hosts checked \
             strictly, BatchMode. ssh, scp and sftp use OpenSSH's default cipher \
             (chacha20-poly1305) and key exchange; what differs from guestcomm: ssh encrypts and \
             MACs every byte and runs every command through the user's shell, guestcomm \
             authenticates each connection (HMAC handshake, then plain frames on a channel only \
             the host can open). Guest files are on the guest's tmpfs (RAM); host files are \
             fsynced. Ratios are medians of per-round ratios within this run.\n",
            self.cpu,
            self.image.kernel,
            self.image.agent,
            self.image.sshd,
            self.image.port,
            self.image.port,
            self.image.port,
            self.image.port
        );
        o.push_str(&m.table());
        let _ = writeln!(
            o,
            "Host load average (1, 5, 15 min, runnable/total, last PID) before: `{}`; after: \
             `{}`. The host is shared: other builds may have run during the measurement.\n",
            self.load[0], self.load[1]
        );
        let _ = writeln!(o, "Versions: {versions}\n");
        let _ = writeln!(
            o,
            "### Exec latency of `true`\n\n{EXEC_SAMPLES} samples per path after a warm-up \
             (ssh with a new connection: {SSH_COLD_SAMPLES}), alternated.\n\n\
             | system | path | p50 ms | p99 ms | ssh (master) ÷ this |\n\
             | --- | --- | ---: | ---: | ---: |"
        );
        for r in &self.latency {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2} | {:.2} | {} |",
                r.system,
                r.path,
                r.samples.median(),
                r.samples.percentile(99.0),
                ratio(&self.latency, r, LATENCY_REFERENCE, true)
            );
        }
        let tables = [
            (
                format!(
                    "Command output (`{}`: {}, as case G)",
                    OUTPUT_COMMAND.join(" "),
                    format_bytes(OUTPUT_BYTES)
                ),
                "this ÷ ssh",
                OUTPUT_REFERENCE,
                &self.output,
            ),
            (
                format!("File copy host → guest, {}", format_bytes(COPY_BYTES)),
                "this ÷ scp",
                COPY_REFERENCE,
                &self.copy_to,
            ),
            (
                format!("File copy guest → host, {}", format_bytes(COPY_BYTES)),
                "this ÷ scp",
                COPY_REFERENCE,
                &self.copy_from,
            ),
        ];
        for (title, column, key, rows) in tables {
            throughput_table(&mut o, &title, "", column, rows, |r| {
                ratio(rows, r, key, false)
            });
        }
        self.render_cpu(&mut o);
        self.startup.render(&mut o, "RDRAND: `+rdrand`");
        self.render_targets(&mut o);
        let _ = writeln!(o, "<!-- bench:{name}:end -->");
        o
    }

    fn render_cpu(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "\n### Where the time goes: the emulated guest CPU\n\n\
             Guest CPU time (user + system, with the children each reaped: the shell, `true`, \
             `dd`) from the guest's /proc/PID/stat, read through guestcomm between rounds; \
             \"busy\" is that time over the operations' wall time. The guest has one vCPU, \
             emulated by TCG: guest CPU time is what the emulator spends running guest code, \
             so a share near 100% means the emulated vCPU is the bottleneck, which KVM \
             would move (native code instead of translated). The rest of a wall time is \
             the host: the ssh client or the guestcomm CLI, the proxy, vhost-device-vsock \
             and QEMU's device emulation.\n\n\
             | operation | guest CPU ms per operation | busy |\n| --- | ---: | ---: |"
        );
        let busy = |c: &GuestCpu| {
            c.busy
                .map_or("n/a".to_string(), |b| format!("{:.0}%", b * 100.0))
        };
        let rows: [(&str, &GuestCpu); 4] = [
            (
                "new ssh connection running `true` (sshd -i, its privilege-separated children, the shell)",
                &self.cold_cpu,
            ),
            (
                "guestcomm exec of `true` (guestcomm-agent and `true`; mean of the three guestcomm paths)",
                &self.exec_cpu,
            ),
            (
                "16 MiB output, guestcomm library (guestcomm-agent and `dd`)",
                &self.output_cpu[0],
            ),
            (
                "16 MiB output, ssh through the master (sshd's session and `dd`)",
                &self.output_cpu[1],
            ),
        ];
        for (what, cpu) in rows {
            let _ = writeln!(o, "| {what} | {:.1} | {} |", cpu.per_op_ms, busy(cpu));
        }
        let [ours, sshd] = &self.output_cpu;
        let _ = writeln!(
            o,
            "\nFor the same 16 MiB, sshd and its children needed {:.1}× the guest CPU that \
             guestcomm-agent and its children did ({:.0} against {:.0} ms, `dd` in both): \
             the difference is ssh's encryption and MAC of every byte (chacha20-poly1305) \
             and its channel bookkeeping, run as emulated code. A new ssh connection spent \
             {:.0} ms of guest CPU (key exchange sntrup761x25519-sha512, the ed25519 host key \
             signature, sshd's privilege separation forks), {:.0} times a guestcomm exec's \
             {:.1} ms (HMAC handshake, fork and exec of `true`).",
            sshd.per_op_ms / ours.per_op_ms,
            sshd.per_op_ms,
            ours.per_op_ms,
            self.cold_cpu.per_op_ms,
            self.cold_cpu.per_op_ms / self.exec_cpu.per_op_ms,
            self.exec_cpu.per_op_ms
        );
    }

    fn render_targets(&self, o: &mut String) {
        let met = |ok: bool| if ok { "**met**" } else { "**missed**" };
        let _ = writeln!(
            o,
            "\n### Targets, in the guest\n\n| target | measured | |\n| --- | ---: | --- |"
        );
        if let Some(master) = ssh_row(&self.latency, LATENCY_REFERENCE) {
            for r in self.latency.iter().filter(|r| r.system == "guestcomm") {
                let x = r.samples.paired_ratio(&master.samples);
                let _ = writeln!(
                    o,
                    "| exec `true` ({}) < ½ of ssh's with a ControlMaster | {x:.2}× ssh's | {} |",
                    short(r.path),
                    met(x < TARGET_EXEC_OF_SSH_MASTER)
                );
            }
        }
        for (name, rows) in [
            ("host → guest", &self.copy_to),
            ("guest → host", &self.copy_from),
        ] {
            if let (Some(ours), Some(scp)) = (rows.first(), ssh_row(rows, COPY_REFERENCE)) {
                let x = advantage(&ours.samples, &scp.samples, false);
                let _ = writeln!(
                    o,
                    "| copy {name} ≥ {TARGET_TIMES_SCP:.0}× scp | {x:.1}× | {} |",
                    met(x >= TARGET_TIMES_SCP)
                );
            }
        }
    }
}

/// A row's paired ratio against the reference row of its table: how many
/// times better than ssh (latency inverted).
fn ratio(rows: &[Row], r: &Row, key: &str, lower_is_better: bool) -> String {
    match ssh_row(rows, key) {
        Some(reference) if std::ptr::eq(reference, r) => "1×".into(),
        Some(reference) => {
            let x = advantage(&r.samples, &reference.samples, lower_is_better);
            format!("{x:.2}×")
        }
        None => "n/a".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Samples;

    fn row(system: &'static str, path: &'static str, values: &[f64]) -> Row {
        Row {
            system,
            path,
            samples: values.iter().copied().collect::<Samples>(),
        }
    }

    #[test]
    fn ratios_are_against_the_named_ssh_row() {
        let rows = vec![
            row("guestcomm", "library, direct to the agent", &[10.0, 20.0]),
            row(
                "OpenSSH",
                "`ssh host true`, ControlMaster connection",
                &[40.0, 80.0],
            ),
            row(
                "OpenSSH",
                "`ssh host true`, new connection",
                &[400.0, 800.0],
            ),
        ];
        assert_eq!(ratio(&rows, &rows[0], LATENCY_REFERENCE, true), "4.00×");
        assert_eq!(ratio(&rows, &rows[1], LATENCY_REFERENCE, true), "1×");
        assert_eq!(ratio(&rows, &rows[2], LATENCY_REFERENCE, true), "0.10×");
        assert_eq!(ratio(&rows, &rows[0], "nothing", true), "n/a");
    }

    #[test]
    fn the_chart_names_the_path_only_where_a_workload_has_several() {
        let exec = vec![
            row("guestcomm", "library, direct to the agent", &[10.0]),
            row("guestcomm", "CLI `guestcomm exec …`", &[20.0]),
            row(
                "OpenSSH",
                "`ssh host true`, ControlMaster connection",
                &[40.0],
            ),
        ];
        let copy = vec![
            row("guestcomm", "`guestcomm cp`", &[30.0]),
            row("OpenSSH", "`scp` (SFTP protocol), ControlMaster", &[10.0]),
        ];
        let bars = advantages_over([
            ("exec", &exec[..], ssh_row(&exec, LATENCY_REFERENCE), true),
            ("copy", &copy[..], ssh_row(&copy, COPY_REFERENCE), false),
            ("none", &copy[..], ssh_row(&copy, "no such row"), false),
        ]);
        assert_eq!(
            bars,
            vec![
                ("exec: library".to_string(), 4.0),
                ("exec: CLI".to_string(), 2.0),
                ("copy".to_string(), 3.0),
            ]
        );
    }
}
