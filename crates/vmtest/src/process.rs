//! Child processes that are always cleaned up by their PID: a guard that
//! kills (SIGKILL) and reaps its child when dropped, also on an error path
//! or a panic, and a runner that gives a command a deadline.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A child process of ours, killed by its PID and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard(Child);

impl ChildGuard {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process has exited (it is reaped if so).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }

    /// SIGKILL now and reap. `Child::kill` signals exactly this PID, and
    /// does nothing once the child has been reaped (its PID may be reused).
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()?;
        self.0.wait().map(|_| ())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Runs `cmd` with `stdin` fed to it (or stdin closed), collecting its
/// output; SIGKILLs it (by PID, while it is certainly not yet reaped) when
/// it runs past `deadline`, which then shows as a signal in the status.
pub fn run_with_deadline(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    deadline: Duration,
) -> std::io::Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let feeder = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || pipe.write_all(&data))),
        _ => None,
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let (finished, wait_for_finish) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        // The main thread signals before it reaps, so the PID is still ours.
        if wait_for_finish.recv_timeout(deadline) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    });
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = pipe {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_reader = read_all(child.stdout.take().map(|p| Box::new(p) as _));
    let err_reader = read_all(child.stderr.take().map(|p| Box::new(p) as _));
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    // Output closed: the command is exiting. Stop the watchdog, then reap.
    let _ = finished.send(());
    let _ = watchdog.join();
    let status = child.wait()?;
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_command_within_its_deadline_gets_its_input_and_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; echo err >&2; exit 3"]);
        let out =
            run_with_deadline(cmd, Some(b"in".to_vec()), Duration::from_secs(30)).expect("sh runs");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"in");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn a_command_past_its_deadline_is_killed() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let start = Instant::now();
        let out = run_with_deadline(cmd, None, Duration::from_millis(200)).expect("sleep runs");
        assert_eq!(out.status.signal(), Some(Signal::SIGKILL as i32));
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_guard_kills_its_child_when_dropped() {
        let child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let pid = child.id();
        drop(ChildGuard::new(child));
        // Reaped: no process (not even a zombie) of ours is left under that
        // PID (another program may have it by now, under another name).
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains("(sleep)"))
            .unwrap_or(false);
        assert!(!alive);
    }
}
