//! `guestcomm audit [--vm VM] [--since T] [--json]`: the daemon's audit log,
//! oldest first. Times are UTC. `guestcomm audit --verify`: whether its hash
//! chains are intact since their anchors.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use guestcomm_api::time::{days_from_civil, utc_fields};
use guestcomm_api::{AuditRecord, AuditVerification};
use guestcomm_protocol::duration::{parse_duration_ms, TimeUnit};
use guestcomm_protocol::text::Escaped;

use crate::api;
use crate::context::Context;
use crate::exit::{Failure, TAMPERED};
use crate::output;

/// Show the audit log: who did what to which VM, allowed or refused, and
/// how it ended (needs the viewer role). Texts that callers or guests chose
/// are shown with their control characters escaped (\n, \u{1b}); --json
/// gives them exactly.
#[derive(Debug, Args)]
#[command(after_help = VERIFY_HELP)]
pub(crate) struct AuditArgs {
    /// Only records of this VM.
    #[arg(long, value_name = "VM")]
    pub(crate) vm: Option<String>,
    /// Only records from this time on: a duration ago (90s, 30m, 2h, 7d),
    /// a UTC date or time (2025-01-31, 2025-01-31T08:00:00Z), or @SECONDS
    /// since the Unix epoch.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub(crate) since: Option<i64>,
    /// At most this many records (the newest).
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Check the log's hash chains instead of listing it: any record
    /// deleted, altered or inserted out of order since each chain's anchor
    /// is reported (needs the admin role; reads the whole log).
    #[arg(long, conflicts_with_all = ["vm", "since", "limit"])]
    pub(crate) verify: bool,
}

const VERIFY_HELP: &str = "\
Exit status: 0 on success, 1 on error. With --verify: 0 when the chains are
intact, 3 when a record was deleted, altered or inserted, 1 when the check
could not run.";

/// Runs `guestcomm audit`.
pub(crate) async fn run(args: AuditArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    if args.verify {
        return verify(ctx).await;
    }
    let mut query = Vec::new();
    if let Some(vm) = &args.vm {
        api::vm_path(vm)?;
        query.push(format!("vm={vm}"));
    }
    if let Some(since) = args.since {
        query.push(format!("since_ms={since}"));
    }
    if let Some(limit) = args.limit {
        query.push(format!("limit={limit}"));
    }
    let path = if query.is_empty() {
        "/v1/audit".to_string()
    } else {
        format!("/v1/audit?{}", query.join("&"))
    };
    let records: Vec<AuditRecord> = ctx.api()?.get(&path).await?;
    let header = [
        "TIME",
        "UID",
        "PID",
        "VM",
        "OPERATION",
        "OUTCOME",
        "EXIT",
        "BYTES",
        "DETAIL",
    ];
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    output::print_list(ctx, &records, &header, |r| {
        // An exec's environment: its names and the start of its digest
        // (the whole digest is in --json); never a value.
        let asked = match &r.environment {
            Some(env) => {
                let cut = if env.names.len() < env.count {
                    " ..."
                } else {
                    ""
                };
                let digest: String = env.sha256.chars().take(16).collect();
                format!(
                    "{} [env {}{cut}; sha256 {digest}]",
                    r.arguments,
                    env.names.join(" ")
                )
            }
            None => r.arguments.clone(),
        };
        let detail = match &r.error {
            Some(e) if asked.is_empty() => e.clone(),
            Some(e) => format!("{asked}: {e}"),
            None => asked,
        };
        vec![
            format_utc(r.time_ms),
            opt(r.uid.map(|u| u.to_string())),
            opt(r.pid.map(|p| p.to_string())),
            opt(r.vm.clone()),
            r.operation.clone(),
            r.outcome.name().into(),
            opt(r.exit_code.map(|c| c.to_string())),
            opt(r.bytes.map(|b| b.to_string())),
            detail,
        ]
    })
}

/// `guestcomm audit --verify`.
async fn verify(ctx: &Context) -> Result<ExitCode, Failure> {
    let report: AuditVerification = ctx.api()?.get("/v1/audit/verify").await?;
    if ctx.json() {
        // The verdict is the exit code, whether or not the JSON could be printed.
        if let Err(failure) = output::print_json(&report) {
            failure.report();
        }
    } else {
        for c in &report.chains {
            println!(
                "{}: {} records, positions {} to {}, anchor {}, head {}",
                c.chain,
                c.records,
                c.anchor_seq + 1,
                c.head_seq,
                c.anchor_digest,
                c.head_digest
            );
        }
        for p in &report.problems {
            println!("{}: {}", p.chain, Escaped(&p.problem));
        }
        if report.more_problems > 0 {
            println!("... and {} more problems", report.more_problems);
        }
        if report.intact {
            println!("The audit log is intact since each chain's anchor.");
        } else {
            println!("The audit log was tampered with.");
        }
    }
    Ok(if report.intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(TAMPERED)
    })
}

/// `--since`: milliseconds since the Unix epoch.
fn parse_since(text: &str) -> Result<i64, String> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    since_at(text, now_ms)
}

fn since_at(text: &str, now_ms: i64) -> Result<i64, String> {
    let bad = || {
        format!("invalid time {text:?}: expected e.g. 30m, 2h, 7d, 2025-01-31, 2025-01-31T08:00:00Z or @1700000000")
    };
    if let Some(secs) = text.strip_prefix('@') {
        return secs
            .parse::<i64>()
            .map(|s| s.saturating_mul(1000))
            .map_err(|_| bad());
    }
    let ago = [
        TimeUnit::Seconds,
        TimeUnit::Minutes,
        TimeUnit::Hours,
        TimeUnit::Days,
    ];
    if let Ok(ms) = parse_duration_ms(text, &ago) {
        return Ok(now_ms.saturating_sub(ms));
    }
    parse_utc(text).ok_or_else(bad)
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[Z]`, UTC, as milliseconds.
fn parse_utc(text: &str) -> Option<i64> {
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').unwrap_or(t))),
        None => (text, None),
    };
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if let Some(time) = time {
        let mut t = time.splitn(3, ':').map(str::parse::<i64>);
        let (h, min) = (t.next()?.ok()?, t.next()?.ok()?);
        let s = t.next().transpose().ok()?.unwrap_or(0);
        if h > 23 || min > 59 || s > 60 {
            return None;
        }
        secs += h * 3600 + min * 60 + s;
    }
    Some(secs * 1000)
}

/// `2025-01-31T08:00:00Z` from milliseconds since the epoch.
fn format_utc(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(ms.div_euclid(1000));
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_dates_and_epoch_seconds() {
        let now = 1_700_000_000_000;
        assert_eq!(since_at("30m", now), Ok(now - 1_800_000));
        assert_eq!(since_at("2d", now), Ok(now - 172_800_000));
        assert_eq!(since_at("@1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(since_at("2023-11-14", now), Ok(1_699_920_000_000));
        assert_eq!(since_at("2023-11-14T22:13:20Z", now), Ok(now));
        for bad in ["", "yesterday", "2023-13-01", "5x", "2023-11-14T25:00"] {
            assert!(since_at(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
