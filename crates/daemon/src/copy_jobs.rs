//! The table of CopyFilesToGuest jobs (Msvm_CopyFileToGuestJob), in the
//! daemon's memory as Hyper-V's are in its service: a restart forgets them
//! (the copies they ran are in the audit log). At most [`MAX_WBEM_JOBS`] are
//! kept; the oldest finished one makes room. WBEM starts and shows them
//! (`wbem::jobs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::clock::now_secs;
use crate::error::Error;
use crate::limits::MAX_WBEM_JOBS;
use crate::model::VmRow;

/// CIM JobState values used here.
pub(crate) const STARTING: u16 = 3;
pub(crate) const RUNNING: u16 = 4;
pub(crate) const COMPLETED: u16 = 7;
pub(crate) const TERMINATED: u16 = 8;
pub(crate) const KILLED: u16 = 9;
pub(crate) const EXCEPTION: u16 = 10;

#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) vm_id: String,
    pub(crate) settings: Vec<String>,
    pub(crate) state: u16,
    pub(crate) percent: u16,
    pub(crate) error: Option<String>,
    /// The failure's Win32 code as an HRESULT (0x8007....), when it has one.
    pub(crate) hresult: Option<u32>,
    /// Told when a client terminates or kills the job ([`Jobs::stop`]).
    pub(crate) stopper: Arc<Notify>,
    pub(crate) changed: i64,
    /// When CopyFilesToGuest made it (it starts at once), in Unix seconds.
    pub(crate) submitted: i64,
}

impl Job {
    pub(crate) fn finished(&self) -> bool {
        self.state >= COMPLETED
    }
}

/// Every job, by number.
#[derive(Default)]
pub(crate) struct Jobs {
    table: Mutex<(u64, BTreeMap<u64, Job>)>,
}

/// What [`Jobs::stop`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The job is now in the state asked for; its task stops the copy.
    Stopped,
    /// The job had already ended.
    Finished,
    /// No such job.
    Unknown,
}

impl Jobs {
    fn with<R>(&self, f: impl FnOnce(&mut (u64, BTreeMap<u64, Job>)) -> R) -> R {
        f(&mut self.table.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn update(&self, number: u64, f: impl FnOnce(&mut Job)) {
        self.with(|(_, jobs)| {
            if let Some(job) = jobs.get_mut(&number) {
                f(job);
                job.changed = now_secs();
            }
        });
    }

    /// Ends job `id` (its InstanceID, any case) in state `to` (TERMINATED
    /// or KILLED) unless it has already ended, and tells its task, which
    /// drops the copy (the guest removes the unfinished temporary file).
    pub(crate) fn stop(&self, id: &str, to: u16) -> Stop {
        self.with(|(_, jobs)| {
            let Some(job) = jobs.values_mut().find(|j| j.id.eq_ignore_ascii_case(id)) else {
                return Stop::Unknown;
            };
            if job.finished() {
                return Stop::Finished;
            }
            job.state = to;
            job.changed = now_secs();
            job.stopper.notify_one();
            Stop::Stopped
        })
    }

    /// Every job, as it is now.
    pub(crate) fn list(&self) -> Vec<Job> {
        self.with(|(_, jobs)| jobs.values().cloned().collect())
    }

    /// Adds a job copying the files described by `settings` to `vm`;
    /// refused when the table is full of running jobs.
    pub(crate) fn add(&self, vm: &VmRow, settings: Vec<String>) -> Result<(u64, String), Error> {
        self.with(|(next, jobs)| {
            if jobs.len() >= MAX_WBEM_JOBS {
                let oldest_done = jobs.iter().find(|(_, j)| j.finished()).map(|(n, _)| *n);
                match oldest_done {
                    Some(n) => {
                        jobs.remove(&n);
                    }
                    None => {
                        return Err(Error::Busy(format!(
                            "{MAX_WBEM_JOBS} CopyFilesToGuest jobs are running: retry when one ends"
                        )))
                    }
                }
            }
            *next += 1;
            let id = format!("guestcomm:copy-{next}");
            jobs.insert(
                *next,
                Job {
                    id: id.clone(),
                    vm_id: vm.id.to_string(),
                    settings,
                    state: STARTING,
                    percent: 0,
                    error: None,
                    hresult: None,
                    stopper: Arc::new(Notify::new()),
                    changed: now_secs(),
                    submitted: now_secs(),
                },
            );
            Ok((*next, id))
        })
    }
}
