//! `guestcomm cim ...`: the management model as CIM objects, through the
//! daemon's WBEM endpoint (CIM-XML at `/cimom` on the API socket), so the
//! CLI sees exactly what pywbem or any other CIM client sees.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use guestcomm_api::{ApiError, ApiErrorCode};
use guestcomm_cim::value::{CimValue, InstanceName};
use guestcomm_cim::xml::client::{self, Answer, Arg, Object};
use guestcomm_cim::{ReturnValue, NAMESPACE};
use guestcomm_protocol::text::{escape_controls, Escaped};

use crate::api;
use crate::context::Context;
use crate::exit::{Failure, FAILED};
use crate::output::{self, write_out};

/// The CIM classes and instances of guestcommd (namespace
/// root/virtualization/v2), as a WBEM client sees them: VMs
/// (Msvm_ComputerSystem), their guest service interface
/// (Msvm_GuestServiceInterfaceComponent), guest services
/// (Msvm_GuestCommunicationService, Msvm_GuestFileService, Guestcomm_*),
/// the Msvm_RegisteredGuestService associations and CopyFilesToGuest jobs.
///
/// An instance PATH is written as CIM clients print it:
/// 'Msvm_GuestCommunicationService.CreationClassName="Msvm_GuestCommunicationService",Name="00004744-facb-11e6-bd58-64006a7986d3",SystemCreationClassName="Msvm_ComputerSystem",SystemName="VM-ID"'
/// (`guestcomm cim enumerate CLASS --names` prints them). Reads need the
/// viewer role, `invoke` admin. Exit status 1 on a CIM error (printed with
/// its CIM_ERR_ name) or when a method returns other than 0 or 4096.
#[derive(Debug, Args)]
pub(crate) struct CimArgs {
    /// The operation.
    #[command(subcommand)]
    pub(crate) command: CimCommand,
}

/// `guestcomm cim` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CimCommand {
    /// List class names (EnumerateClassNames): the subclasses of CLASS,
    /// or the top-level classes.
    Classes {
        /// Start below this class.
        class: Option<String>,
        /// All descendants, not only the direct subclasses.
        #[arg(long)]
        deep: bool,
    },
    /// List the instances of CLASS and its subclasses (EnumerateInstances).
    Enumerate {
        /// The class, e.g. Msvm_GuestCommunicationService.
        class: String,
        /// Only the instance paths (EnumerateInstanceNames).
        #[arg(long)]
        names: bool,
        /// Only these properties (repeatable).
        #[arg(long = "property", value_name = "NAME")]
        properties: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one instance (GetInstance).
    Get {
        /// The instance path.
        path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a WQL query (ExecQuery): SELECT * | PROPS FROM CLASS [WHERE ...],
    /// with =, <>, <, <=, >, >=, IS [NOT] NULL, AND, OR, NOT, parentheses.
    Query {
        /// The query, e.g. "SELECT Name FROM Msvm_GuestCommunicationService WHERE EnabledState = 3".
        query: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow associations from an instance (Associators, or References
    /// with --references), e.g. from a VM's interface component to its
    /// services through Msvm_RegisteredGuestService.
    Associators {
        /// The instance path.
        path: String,
        /// Only through this association class (Associators only).
        #[arg(long, value_name = "CLASS")]
        assoc_class: Option<String>,
        /// Only results of this class.
        #[arg(long, value_name = "CLASS")]
        result_class: Option<String>,
        /// The association objects themselves (References).
        #[arg(long)]
        references: bool,
        /// Only the paths (AssociatorNames, ReferenceNames).
        #[arg(long)]
        names: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call a method of an instance (InvokeMethod), e.g.
    /// `invoke PATH RequestStateChange RequestedState=3`.
    Invoke {
        /// The instance path.
        path: String,
        /// The method: RequestStateChange, StartService, StopService,
        /// CopyFilesToGuest.
        method: String,
        /// Input parameters, NAME=VALUE; a NAME given twice is an array; a
        /// VALUE starting with `<INSTANCE` is an embedded instance (CIM-XML
        /// text, as CopyFilesToGuest's CopyFileToGuestSettings takes).
        #[arg(value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl CimCommand {
    /// Whether to print JSON (`--json`; `classes` has none).
    pub(crate) fn json(&self) -> bool {
        match self {
            CimCommand::Classes { .. } => false,
            CimCommand::Enumerate { json, .. }
            | CimCommand::Get { json, .. }
            | CimCommand::Query { json, .. }
            | CimCommand::Associators { json, .. }
            | CimCommand::Invoke { json, .. } => *json,
        }
    }
}

fn local(error: String) -> ApiError {
    api::local_error(400, ApiErrorCode::InvalidArgument, error)
}

fn path(text: &str) -> Result<InstanceName, ApiError> {
    InstanceName::parse_path(text).map_err(local)
}

/// Runs `guestcomm cim`.
pub(crate) async fn run(args: CimArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let ns = NAMESPACE;
    let (operation, params, names_only): (&str, Vec<(&str, Arg)>, bool) = match &args.command {
        CimCommand::Classes { class, deep } => {
            let mut p = vec![("DeepInheritance", Arg::Value(deep.to_string()))];
            if let Some(c) = class {
                p.push(("ClassName", Arg::ClassName(c.clone())));
            }
            ("EnumerateClassNames", p, true)
        }
        CimCommand::Enumerate {
            class,
            names,
            properties,
            ..
        } => {
            let mut p = vec![("ClassName", Arg::ClassName(class.clone()))];
            if *names {
                ("EnumerateInstanceNames", p, true)
            } else {
                if !properties.is_empty() {
                    p.push(("PropertyList", Arg::Array(properties.clone())));
                }
                ("EnumerateInstances", p, false)
            }
        }
        CimCommand::Get { path: text, .. } => (
            "GetInstance",
            vec![("InstanceName", Arg::InstanceName(path(text)?))],
            false,
        ),
        CimCommand::Query { query, .. } => (
            "ExecQuery",
            vec![
                ("QueryLanguage", Arg::Value("WQL".into())),
                ("Query", Arg::Value(query.clone())),
            ],
            false,
        ),
        CimCommand::Associators {
            path: text,
            assoc_class,
            result_class,
            references,
            names,
            ..
        } => {
            let operation = match (references, names) {
                (false, false) => "Associators",
                (false, true) => "AssociatorNames",
                (true, false) => "References",
                (true, true) => "ReferenceNames",
            };
            let mut p = vec![("ObjectName", Arg::InstanceName(path(text)?))];
            if let Some(c) = assoc_class {
                if *references {
                    return Err(local(
                        "--assoc-class is for associators; with --references use --result-class"
                            .into(),
                    )
                    .into());
                }
                p.push(("AssocClass", Arg::ClassName(c.clone())));
            }
            if let Some(c) = result_class {
                p.push(("ResultClass", Arg::ClassName(c.clone())));
            }
            (operation, p, *names)
        }
        CimCommand::Invoke {
            path: text,
            method,
            params,
            ..
        } => return invoke(ctx, &path(text)?, method, params).await,
    };
    let xml = client::intrinsic_request(1, operation, ns, &params);
    let body = ctx.api()?.post_cim("/cimom", operation, ns, xml).await?;
    let objects = match decode(&body)? {
        Answer::Objects(objects) => objects,
        Answer::Return(..) => {
            return Err(local("the daemon answered a method result".into()).into())
        }
    };
    if ctx.json() {
        let items: Vec<serde_json::Value> = objects.iter().map(object_json).collect();
        return output::print_json(&items);
    }
    let mut out = String::new();
    for o in &objects {
        match o {
            Object::Instance(p, inst) if !names_only => {
                match p {
                    Some(p) => out.push_str(&format!("{}\n", Escaped(&p.to_string()))),
                    None => out.push_str(&format!("{}\n", inst.class)),
                }
                for (k, v) in &inst.properties {
                    if *v != CimValue::Null {
                        out.push_str(&format!("  {k} = {}\n", value_text(v)));
                    }
                }
                out.push('\n');
            }
            Object::Instance(Some(p), _) | Object::Name(p) => {
                out.push_str(&format!("{}\n", Escaped(&p.to_string())))
            }
            Object::Instance(None, inst) => out.push_str(&format!("{}\n", inst.class)),
            Object::ClassName(c) | Object::Class(c) => out.push_str(&format!("{c}\n")),
        }
    }
    write_out(&out)
}

/// The answer, or the CIM error it carries as an API error (exit 1).
fn decode(body: &[u8]) -> Result<Answer, ApiError> {
    match client::parse_response(body) {
        Ok(Ok(answer)) => Ok(answer),
        // The API has no word for a CIM status: the code is its CIM name.
        Ok(Err(e)) => Err(api::local_error(
            400,
            ApiErrorCode::Other(e.status.name().into()),
            e.to_string(),
        )),
        Err(e) => Err(local(format!(
            "cannot read the daemon's CIM-XML answer: {e}"
        ))),
    }
}

async fn invoke(
    ctx: &Context,
    target: &InstanceName,
    method: &str,
    params: &[String],
) -> Result<ExitCode, Failure> {
    let mut args: Vec<(String, Arg)> = Vec::new();
    for p in params {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| local(format!("parameter {p:?}: expected NAME=VALUE")))?;
        let embedded = value.trim_start().starts_with("<INSTANCE");
        match args.iter_mut().find(|(n, _)| n == name) {
            Some((_, Arg::Array(items) | Arg::Embedded(items))) => items.push(value.into()),
            Some((_, slot)) => {
                let Arg::Value(first) = slot.clone() else {
                    return Err(local(format!("parameter {name} given twice")).into());
                };
                *slot = Arg::Array(vec![first, value.into()]);
            }
            None if embedded => args.push((name.into(), Arg::Embedded(vec![value.into()]))),
            None => args.push((name.into(), Arg::Value(value.into()))),
        }
    }
    let ns = NAMESPACE;
    let xml = client::method_request(1, method, ns, target, &args);
    let object = format!("{ns}:{}", target.class);
    let body = ctx.api()?.post_cim("/cimom", method, &object, xml).await?;
    let Answer::Return(value, outputs) = decode(&body)? else {
        return Err(local("the daemon answered objects to a method call".into()).into());
    };
    // The method's return value is the exit code, whether or not its
    // output could be printed.
    let printed = if ctx.json() {
        let mut map = serde_json::Map::new();
        map.insert("ReturnValue".into(), value_json(&value));
        for (k, v) in &outputs {
            map.insert(k.clone(), value_json(v));
        }
        output::print_json(&map)
    } else {
        let mut out = format!("ReturnValue = {}\n", value_text(&value));
        for (k, v) in &outputs {
            out.push_str(&format!("{k} = {}\n", value_text(v)));
        }
        write_out(&out)
    };
    if let Err(failure) = printed {
        failure.report();
    }
    Ok(match value {
        CimValue::Uint(code) if ReturnValue::succeeded(code) => ExitCode::SUCCESS,
        _ => ExitCode::from(FAILED),
    })
}

/// A value as shown: strings quoted and escaped, any other text escaped.
fn value_text(v: &CimValue) -> String {
    match v {
        CimValue::Null => "NULL".into(),
        CimValue::String(s) | CimValue::Datetime(s) => format!("{s:?}"),
        CimValue::Reference(r) => escape_controls(&r.to_string()).into_owned(),
        CimValue::Array(items) => {
            let items: Vec<String> = items.iter().map(value_text).collect();
            format!("{{{}}}", items.join(", "))
        }
        other => escape_controls(&other.text().unwrap_or_default()).into_owned(),
    }
}

fn value_json(v: &CimValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        CimValue::Null => Value::Null,
        CimValue::Boolean(b) => Value::Bool(*b),
        CimValue::String(s) | CimValue::Datetime(s) => Value::String(s.clone()),
        CimValue::Uint(n) => Value::from(*n),
        CimValue::Sint(n) => Value::from(*n),
        CimValue::Real(n) => Value::from(*n),
        CimValue::Reference(r) => Value::String(r.to_string()),
        CimValue::Array(items) => Value::Array(items.iter().map(value_json).collect()),
    }
}

fn object_json(o: &Object) -> serde_json::Value {
    match o {
        Object::Instance(p, inst) => serde_json::json!({
            "path": p.as_ref().map(ToString::to_string),
            "class": inst.class,
            "properties": inst
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), value_json(v)))
                .collect::<serde_json::Map<_, _>>(),
        }),
        Object::Name(p) => serde_json::json!({ "path": p.to_string(), "class": p.class }),
        Object::ClassName(c) | Object::Class(c) => serde_json::json!({ "class": c }),
    }
}
