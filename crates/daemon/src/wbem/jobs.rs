//! CopyFilesToGuest jobs (Msvm_CopyFileToGuestJob): the table clients poll
//! with GetInstance, and the task that copies each file to the guest
//! through the agent's files service, as `guestcomm cp` does.
//!
//! ```text
//! CopyFilesToGuest -> start: a job (JobState 3 Starting), 4096 + its reference
//!   task: for each file: stat the source, connect to the agent, copy_to_guest
//!         (PercentComplete follows the bytes sent) -> 7 Completed
//!         | 10 Exception with ErrorDescription (the first failure ends the job)
//! ```
//!
//! The jobs' table is [`crate::copy_jobs`].

use std::path::PathBuf;
use std::sync::Arc;

use guestcomm_cim::value::{CimValue, Instance, InstanceName};
use guestcomm_cim::CimError;
use guestcomm_policy::Direction;
use guestcomm_protocol::error_chain;
use guestcomm_protocol::files::CopyToGuest;

use crate::audit::{self, Outcome};
use crate::caller::Caller;
use crate::copy_jobs::{Job, Jobs, COMPLETED, EXCEPTION, RUNNING};
use crate::model::VmRow;
use crate::policy::cim_datetime;
use crate::state::State;

/// The job class.
pub(crate) const JOB_CLASS: &str = "Msvm_CopyFileToGuestJob";

/// One file of a CopyFilesToGuest call (Msvm_CopyFileToGuestSettingData).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CopyFile {
    /// On the host, read by guestcommd.
    pub(crate) source: PathBuf,
    /// The copy's options, destination included.
    pub(crate) request: CopyToGuest,
    /// The setting data as the client embedded it (the job's
    /// CopyFileToGuestSettingData[]).
    pub(crate) embedded: String,
}

/// Starts copying `files` to `vm` in the background; the job's name.
pub(crate) fn start(
    state: &Arc<State>,
    vm: VmRow,
    files: Vec<CopyFile>,
    caller: Caller,
) -> Result<InstanceName, CimError> {
    let settings = files.iter().map(|f| f.embedded.clone()).collect();
    let (number, id) = state
        .wbem_jobs
        .add(&vm, settings)
        .map_err(|e| super::refusal::cim_error(&e))?;
    tokio::spawn(run(state.clone(), number, vm, files, caller));
    Ok(job_name(&id))
}

/// Every job as an instance.
pub(crate) fn instances(jobs: &Jobs) -> Vec<Instance> {
    jobs.list().iter().map(instance).collect()
}

/// The name of job `id`.
fn job_name(id: &str) -> InstanceName {
    InstanceName::new(
        JOB_CLASS,
        vec![("InstanceID".into(), CimValue::String(id.into()))],
    )
}

/// A failed job's error as a CIM_Error instance (its GetError): the
/// description, what failed (the job) and that it is the failure's end.
pub(crate) fn error_instance(job_id: &str, description: &str) -> Instance {
    let text = |s: &str| CimValue::String(s.into());
    Instance {
        class: "CIM_Error".into(),
        properties: vec![
            ("ErrorType".into(), CimValue::Uint(1)),
            ("OtherErrorType".into(), text("CopyFilesToGuest failed")),
            ("OwningEntity".into(), text("guestcomm")),
            ("MessageID".into(), text("guestcomm:copy-failed")),
            ("Message".into(), text(description)),
            ("PerceivedSeverity".into(), CimValue::Uint(5)),
            ("CIMStatusCode".into(), CimValue::Uint(1)),
            ("CIMStatusCodeDescription".into(), text("CIM_ERR_FAILED")),
            ("ErrorSource".into(), text(job_id)),
        ],
    }
}

/// A CIM interval (DSP0004): `ddddddddhhmmss.mmmmmm:000`.
fn cim_interval(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    format!(
        "{days:08}{:02}{:02}{:02}.000000:000",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn instance(job: &Job) -> Instance {
    let text = |s: &str| CimValue::String(s.into());
    // Until it ends, a job's ElapsedTime runs on.
    let end = if job.finished() {
        job.changed
    } else {
        crate::clock::now_secs()
    };
    let elapsed = u64::try_from(end.saturating_sub(job.submitted)).unwrap_or(0);
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
            "TimeSubmitted".into(),
            CimValue::Datetime(cim_datetime(job.submitted)),
        ),
        (
            "StartTime".into(),
            CimValue::Datetime(cim_datetime(job.submitted)),
        ),
        (
            "ElapsedTime".into(),
            CimValue::Datetime(cim_interval(elapsed)),
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
        let session = crate::agent::connect(vm)
            .await
            .map_err(|e| error_chain(&e))?;
        // The host policy's prefixes travel with the request, for the
        // agent to keep the path beneath them (or the copy is refused).
        let mut request = f.request.clone();
        request.host_prefixes = crate::admission::copy_prefixes(
            state,
            vm,
            Direction::ToGuest,
            &session.welcome.features,
        )
        .await
        .map_err(|e| error_chain(&e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_times_are_dsp0004_intervals() {
        assert_eq!(cim_interval(0), "00000000000000.000000:000");
        assert_eq!(cim_interval(90_061), "00000001010101.000000:000");
    }
}
