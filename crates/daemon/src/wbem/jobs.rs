//! CopyFilesToGuest jobs (Msvm_CopyFileToGuestJob): the table clients poll
//! with GetInstance, and the task that copies each file to the guest
//! through the agent's files service, as `guestcomm cp` does.
//!
//! ```text
//! CopyFilesToGuest -> Jobs::start: a job (JobState 3 Starting), 4096 + its reference
//!   task: for each file: stat the source, connect to the agent, copy_to_guest
//!         (PercentComplete follows the bytes sent) -> 7 Completed
//!         | 10 Exception with ErrorDescription (the first failure ends the job)
//! ```
//!
//! Jobs live in the daemon's memory, as Hyper-V's do in its service: a
//! restart forgets them (the copies they ran are in the audit log). At most
//! [`MAX_WBEM_JOBS`] are kept; the oldest finished one makes room.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use guestcomm_cim::value::{CimValue, Instance, InstanceName};
use guestcomm_cim::{CimError, CimStatus};
use guestcomm_policy::Direction;
use guestcomm_protocol::files::CopyToGuest;
use guestcomm_protocol::handshake::error_chain;

use crate::access::Caller;
use crate::audit::{self, Outcome};
use crate::limits::MAX_WBEM_JOBS;
use crate::policy::cim_datetime;
use crate::store::{now_secs, VmRow};
use crate::State;

/// The job class.
pub const JOB_CLASS: &str = "Msvm_CopyFileToGuestJob";

/// CIM JobState values used here.
const STARTING: u16 = 3;
const RUNNING: u16 = 4;
const COMPLETED: u16 = 7;
const EXCEPTION: u16 = 10;

/// One file of a CopyFilesToGuest call (Msvm_CopyFileToGuestSettingData).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyFile {
    /// On the host, read by guestcommd.
    pub source: PathBuf,
    /// The copy's options, destination included.
    pub request: CopyToGuest,
    /// The setting data as the client embedded it (the job's
    /// CopyFileToGuestSettingData[]).
    pub embedded: String,
}

#[derive(Clone, Debug)]
struct Job {
    id: String,
    vm_id: String,
    settings: Vec<String>,
    state: u16,
    percent: u16,
    error: Option<String>,
    changed: i64,
}

impl Job {
    fn finished(&self) -> bool {
        self.state >= COMPLETED
    }
}

/// Every job, by number.
#[derive(Default)]
pub struct Jobs {
    table: Mutex<(u64, BTreeMap<u64, Job>)>,
}

impl Jobs {
    fn with<R>(&self, f: impl FnOnce(&mut (u64, BTreeMap<u64, Job>)) -> R) -> R {
        f(&mut self.table.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn update(&self, number: u64, f: impl FnOnce(&mut Job)) {
        self.with(|(_, jobs)| {
            if let Some(job) = jobs.get_mut(&number) {
                f(job);
                job.changed = now_secs();
            }
        });
    }

    /// Every job as an instance.
    pub fn instances(&self) -> Vec<Instance> {
        self.with(|(_, jobs)| jobs.values().map(instance).collect())
    }

    /// Adds a job for `files` on `vm`; refused when the table is full of
    /// running jobs.
    fn add(&self, vm: &VmRow, files: &[CopyFile]) -> Result<(u64, String), CimError> {
        self.with(|(next, jobs)| {
            if jobs.len() >= MAX_WBEM_JOBS {
                let oldest_done = jobs.iter().find(|(_, j)| j.finished()).map(|(n, _)| *n);
                match oldest_done {
                    Some(n) => {
                        jobs.remove(&n);
                    }
                    None => {
                        return Err(CimError::new(
                            CimStatus::Failed,
                            format!("{MAX_WBEM_JOBS} CopyFilesToGuest jobs are running: retry when one ends"),
                        ))
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
                    settings: files.iter().map(|f| f.embedded.clone()).collect(),
                    state: STARTING,
                    percent: 0,
                    error: None,
                    changed: now_secs(),
                },
            );
            Ok((*next, id))
        })
    }

    /// Starts copying `files` to `vm` in the background; the job's name.
    pub fn start(
        state: &Arc<State>,
        vm: VmRow,
        files: Vec<CopyFile>,
        caller: Caller,
    ) -> Result<InstanceName, CimError> {
        let (number, id) = state.wbem_jobs.add(&vm, &files)?;
        tokio::spawn(run(state.clone(), number, vm, files, caller));
        Ok(job_name(&id))
    }
}

/// The name of job `id`.
fn job_name(id: &str) -> InstanceName {
    InstanceName::new(
        JOB_CLASS,
        vec![("InstanceID".into(), CimValue::String(id.into()))],
    )
}

fn instance(job: &Job) -> Instance {
    let text = |s: &str| CimValue::String(s.into());
    let mut properties = vec![
        ("InstanceID".into(), text(&job.id)),
        ("Name".into(), text("CopyFilesToGuest")),
        ("ElementName".into(), text("CopyFilesToGuest")),
        ("JobState".into(), CimValue::Uint(job.state.into())),
        ("PercentComplete".into(), CimValue::Uint(job.percent.into())),
        (
            "ErrorCode".into(),
            CimValue::Uint(u64::from(job.error.is_some())),
        ),
        ("Cancellable".into(), CimValue::Boolean(false)),
        ("VirtualSystemName".into(), text(&job.vm_id)),
        (
            "TimeOfLastStateChange".into(),
            CimValue::Datetime(cim_datetime(job.changed)),
        ),
        (
            "CopyFileToGuestSettingData".into(),
            CimValue::Array(job.settings.iter().map(|s| text(s)).collect()),
        ),
    ];
    if let Some(e) = &job.error {
        properties.push(("ErrorDescription".into(), text(e)));
        properties.push(("ErrorSummaryDescription".into(), text(e)));
    }
    Instance {
        class: JOB_CLASS.into(),
        properties,
    }
}

/// Moves PercentComplete with the bytes sent (99 at most until the agent
/// confirms the end).
struct JobProgress {
    state: Arc<State>,
    number: u64,
    done: u64,
    total: u64,
    shown: u16,
}

impl guestcomm_client::Progress for JobProgress {
    fn bytes(&mut self, n: u64) {
        self.done = self.done.saturating_add(n);
        let percent = (self.done.saturating_mul(100) / self.total.max(1)).min(99) as u16;
        if percent != self.shown {
            self.shown = percent;
            self.state
                .wbem_jobs
                .update(self.number, |j| j.percent = percent);
        }
    }
}

/// The job's task: each file in turn; the first failure ends it.
async fn run(state: Arc<State>, number: u64, vm: VmRow, files: Vec<CopyFile>, caller: Caller) {
    let started = std::time::Instant::now();
    let mut record = audit::record(caller, "cp.to_guest");
    record.vm = Some(vm.name.clone());
    record.arguments = audit::arguments(
        &files
            .iter()
            .map(|f| format!("{} {}:{}", f.source.display(), vm.name, f.request.dst))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let audit_id = state.audit_start(&record).await;
    state.wbem_jobs.update(number, |j| j.state = RUNNING);
    let outcome = copy_all(&state, number, &vm, files).await;
    let (job_state, error) = match &outcome {
        Ok(bytes) => {
            record.bytes = Some(*bytes);
            (COMPLETED, None)
        }
        Err(e) => (EXCEPTION, Some(e.clone())),
    };
    state.wbem_jobs.update(number, |j| {
        j.state = job_state;
        if job_state == COMPLETED {
            j.percent = 100;
        }
        j.error.clone_from(&error);
    });
    let result = if error.is_some() {
        Outcome::Failed
    } else {
        Outcome::Ok
    };
    audit::finish(&mut record, result, error, started);
    state.audit_end(audit_id, record).await;
}

/// Copies every file; the bytes sent, or the first failure in one line.
async fn copy_all(
    state: &Arc<State>,
    number: u64,
    vm: &VmRow,
    files: Vec<CopyFile>,
) -> Result<u64, String> {
    let mut total = 0u64;
    for f in &files {
        let meta = tokio::fs::metadata(&f.source)
            .await
            .map_err(|e| format!("cannot read {}: {e}", f.source.display()))?;
        if !meta.is_file() {
            return Err(format!(
                "{} is not a regular file (CopyFilesToGuest copies files)",
                f.source.display()
            ));
        }
        total = total.saturating_add(meta.len());
    }
    let mut progress = JobProgress {
        state: state.clone(),
        number,
        done: 0,
        total,
        shown: 0,
    };
    for f in files {
        let session = crate::integration::session(vm)
            .await
            .map_err(|e| error_chain(&e))?;
        // The host policy's prefixes travel with the request, for the
        // agent to keep the path beneath them (or the copy is refused).
        let view = state.vm_view(&vm.name).await.map_err(|e| error_chain(&e))?;
        let mut request = f.request.clone();
        request.host_prefixes = crate::policy_doc::relayed_prefixes(
            view.document.as_ref(),
            vm,
            Direction::ToGuest,
            &session.welcome.features,
        )
        .map_err(|frame| frame.message)?;
        let idle = guestcomm_client::DEFAULT_COPY_IDLE_TIMEOUT;
        guestcomm_client::copy_to_guest(session.conn, &f.source, request, idle, &mut progress)
            .await
            .map_err(|e| {
                format!(
                    "copying {} to {}:{}: {}",
                    f.source.display(),
                    vm.name,
                    f.request.dst,
                    error_chain(&e)
                )
            })?;
    }
    Ok(total)
}
