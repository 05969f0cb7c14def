//! Agent start to first answered exec, in the guest (cases G and K).
//!
//! Each round, through the running agent, a second guestcomm-agent is
//! started on vsock port [`STARTUP_PORT`] (no `--credentials`: it finds the
//! VM's key in QEMU's fw_cfg entry, as the first one did; `--kvp-socket
//! off`, since the first one holds that socket) by a wrapper shell that
//! records the guest's clock right before it `exec`s the agent. The host,
//! already polling, tries connect + authenticated handshake + exec of
//! `adjtimex` every [`RETRY_INTERVAL`] until one answers; the answer holds
//! the guest's clock when the exec ran. The difference of the two guest
//! readings is the agent's start → first answered exec, on one clock, with
//! none of the host's polling in it. The guest's busybox `date` has no
//! `%N`; its `adjtimex` prints the clock in microseconds. The wrapper waits
//! [`LAUNCH_PAUSE`] before it reads the clock, so that the host is polling
//! before the agent starts. Then the second agent is stopped (SIGTERM) and
//! reaped before the next round.
//!
//! Reported with whether the guest's kernel random pool was initialized
//! (`crng init done` in dmesg) when the rounds ended, and, for context, the
//! host-side time of an exec on the warm second agent.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use guestcomm_transport::Address;

use crate::cases::library_capture;
use crate::stats::Samples;
use crate::vm_guest::Guest;

/// The second agent's vsock port.
const STARTUP_PORT: u32 = 18260;
/// Rounds: one agent start each.
pub(crate) const STARTUP_ROUNDS: usize = 7;
/// Execs on the warm second agent per round, for context.
const WARM_EXECS: usize = 3;
/// Pause between two tries of the host.
const RETRY_INTERVAL: Duration = Duration::from_millis(1);
/// One try (a connect the guest accepts but never answers must not hang).
const TRY_DEADLINE: Duration = Duration::from_secs(10);
/// How long one start may take to its first answer.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// The wrapper's pause before the start (whole seconds: busybox `sleep`).
const LAUNCH_PAUSE: &str = "1";
/// Where the wrapper leaves its PID and the clock reading.
const PID_FILE: &str = "/tmp/bench-startup.pid";
const CLOCK_FILE: &str = "/tmp/bench-startup.t0";

/// What the start-up rounds measured.
#[derive(Debug, Default)]
pub(crate) struct Startup {
    /// Agent start → first answered exec, ms of the guest's clock.
    pub(crate) first_exec: Samples,
    /// Host-side ms of one exec (new connection, handshake, `adjtimex`) on
    /// the second agent once it has answered.
    pub(crate) warm_exec: Samples,
    /// Tries the host made per round until one was answered.
    pub(crate) tries: Samples,
    /// Whether the guest's kernel random pool was initialized when the
    /// rounds ended.
    pub(crate) pool_initialized: bool,
}

/// The guest's clock in microseconds, from `adjtimex`'s output
/// (`time.tv_sec:` and `time.tv_usec:` lines).
pub(crate) fn parse_adjtimex(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    let (sec, usec) = (field("time.tv_sec:")?, field("time.tv_usec:")?);
    (usec < 1_000_000).then(|| sec * 1_000_000 + usec)
}

/// The wrapper that starts the second agent, detached from the exec that
/// runs it.
pub(crate) fn launch_script() -> String {
    format!(
        "rm -f {CLOCK_FILE}; setsid sh -c 'echo $$ > {PID_FILE}; sleep {LAUNCH_PAUSE}; \
         adjtimex > {CLOCK_FILE}; exec /bin/guestcomm-agent --listen vsock://any:{STARTUP_PORT} \
         --kvp-socket off' </dev/null >/dev/null 2>&1 &"
    )
}

/// Stops the second agent and waits (bounded) until it is reaped.
fn stop_script() -> String {
    format!(
        "p=$(cat {PID_FILE}); kill $p; i=0; \
         while [ -d /proc/$p ] && [ $i -lt 500 ]; do usleep 20000; i=$((i+1)); done; \
         [ ! -d /proc/$p ] || {{ echo \"agent $p still there\" >&2; exit 1; }}"
    )
}

/// Runs the rounds in `g`.
pub(crate) fn measure(g: &Guest<'_>) -> anyhow::Result<Startup> {
    let addr = Address::HybridVsock {
        path: g.vm.uds(),
        port: STARTUP_PORT,
    };
    let mut out = Startup::default();
    for _ in 0..STARTUP_ROUNDS {
        g.shell("starting a second agent", &launch_script())?;
        let deadline = Instant::now() + START_DEADLINE;
        let mut tries = 0usize;
        let answered = loop {
            tries += 1;
            let attempt = g.rt.block_on(async {
                tokio::time::timeout(
                    TRY_DEADLINE,
                    library_capture(&addr, Some(g.vm.psk()), "adjtimex", &[]),
                )
                .await
            });
            match attempt {
                Ok(Ok(text)) => break String::from_utf8_lossy(&text).into_owned(),
                _ if Instant::now() > deadline => {
                    bail!("the second agent did not answer within {START_DEADLINE:?}")
                }
                _ => std::thread::sleep(RETRY_INTERVAL),
            }
        };
        for _ in 0..WARM_EXECS {
            let start = Instant::now();
            g.library(
                "exec on the warm agent",
                library_capture(&addr, Some(g.vm.psk()), "adjtimex", &[]),
            )?;
            out.warm_exec.push_ms(start.elapsed());
        }
        let started = g.shell("reading the start's clock", &format!("cat {CLOCK_FILE}"))?;
        g.shell("stopping the second agent", &stop_script())?;
        let (Some(t0), Some(t1)) = (parse_adjtimex(&started), parse_adjtimex(&answered)) else {
            bail!("no clock in adjtimex's output: {started:?}, {answered:?}");
        };
        out.first_exec.push(t1.saturating_sub(t0) as f64 / 1e3);
        out.tries.push(tries as f64);
    }
    let crng = g
        .shell(
            "reading the random pool's state",
            "dmesg | grep -c 'crng init done' || true",
        )
        .context("dmesg")?;
    out.pool_initialized = crng.trim().parse::<u32>().unwrap_or(0) > 0;
    Ok(out)
}

impl Startup {
    /// The report's subsection; `entropy` says what seeded the guest's
    /// random pool (e.g. "no RDRAND, no virtio-rng").
    pub(crate) fn render(&self, o: &mut String, entropy: &str) {
        let pool = if self.pool_initialized {
            "initialized"
        } else {
            "**not** initialized"
        };
        let _ = writeln!(
            o,
            "\n### Agent start to first answered exec, in the guest\n\n\
             {STARTUP_ROUNDS} starts of a second guestcomm-agent (vsock port {STARTUP_PORT}, \
             the VM's key from fw_cfg as at boot), each by a wrapper started through the running \
             agent that reads the guest's clock (`adjtimex`, µs) right before it `exec`s the \
             agent; the host meanwhile tries connect + authenticated handshake + exec \
             `adjtimex` every {} ms until one is answered, and the answer's clock minus the \
             wrapper's is the start-up, both on the guest's clock (`crates/bench/src/vm_startup.rs`). \
             Measured right after boot; the guest's random pool ({entropy}) was {pool} when the \
             rounds ended (`crng init done` in dmesg).\n\n\
             | what | p50 ms | min | max |\n| --- | ---: | ---: | ---: |",
            RETRY_INTERVAL.as_millis()
        );
        let rows = [
            (
                "agent start → first answered exec (guest clock)",
                &self.first_exec,
            ),
            (
                "for context: one exec on the warm agent (host side: connect, handshake, exec `adjtimex`)",
                &self.warm_exec,
            ),
        ];
        for (what, s) in rows {
            let _ = writeln!(
                o,
                "| {what} | {:.1} | {:.1} | {:.1} |",
                s.median(),
                s.min(),
                s.max()
            );
        }
        let _ = writeln!(
            o,
            "\nThe host was polling before each start: {:.0} tries per start (median), the \
             wrapper's {LAUNCH_PAUSE} s pause included.",
            self.tries.median()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_comes_from_adjtimex_in_microseconds() {
        let text = "    mode:         0\n-o  offset:       0 us\n\
                    -t  tick:         10000 us\n    time.tv_sec:  1796490013\n\
                    \x20   time.tv_usec: 687824\n    return value: 5 (clock not synchronized)\n";
        assert_eq!(parse_adjtimex(text), Some(1_796_490_013_687_824));
        assert_eq!(parse_adjtimex("time.tv_sec: 1\n"), None);
        assert_eq!(
            parse_adjtimex("time.tv_sec: 1\ntime.tv_usec: 1000000\n"),
            None
        );
        assert_eq!(parse_adjtimex("time.tv_sec: x\ntime.tv_usec: 1\n"), None);
    }

    #[test]
    fn the_wrapper_reads_the_clock_right_before_the_agent_starts() {
        let script = launch_script();
        let clock = script.find("adjtimex >").unwrap();
        let exec = script.find("exec /bin/guestcomm-agent").unwrap();
        assert!(clock < exec, "{script}");
        assert!(script.contains("--listen vsock://any:18260 --kvp-socket off"));
        assert!(script.starts_with("rm -f /tmp/bench-startup.t0; setsid sh -c"));
    }
}
