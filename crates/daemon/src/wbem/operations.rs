//! The intrinsic operations of DSP0200 this server answers: the class
//! operations from the repository, the instance and association operations
//! and ExecQuery from a [`Snapshot`] of the state (the associations of a
//! class, from the repository). Other intrinsic
//! operations (Create/Modify/Delete, qualifiers, pulled enumerations) are
//! CIM_ERR_NOT_SUPPORTED. Unknown parameters are CIM_ERR_INVALID_PARAMETER.

use std::sync::Arc;

use guestcomm_cim::value::{CimValue, Instance, InstanceName};
use guestcomm_cim::wql;
use guestcomm_cim::xml::request::{Call, ParamValue};
use guestcomm_cim::xml::response::{self as enc, Shape};
use guestcomm_cim::{CimError, CimStatus, Repository, NAMESPACE};

use super::objects::{one_per_service, vm_id_of, Snapshot};
use super::refusal::cim_error;
use crate::state::State;

fn invalid(message: String) -> CimError {
    CimError::new(CimStatus::InvalidParameter, message)
}

/// Typed access to an operation's parameters.
struct Args<'a>(&'a Call);

impl Args<'_> {
    /// Refuses parameters the operation does not take.
    fn only(&self, known: &[&str]) -> Result<(), CimError> {
        match self
            .0
            .params
            .iter()
            .find(|p| !known.iter().any(|k| k.eq_ignore_ascii_case(&p.name)))
        {
            Some(p) => Err(invalid(format!(
                "{} takes no parameter {} (it takes {})",
                self.0.name,
                p.name,
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn value(&self, name: &str) -> Option<&ParamValue> {
        self.0
            .param(name)
            .map(|p| &p.value)
            .filter(|v| **v != ParamValue::Null)
    }

    fn boolean(&self, name: &str, default: bool) -> Result<bool, CimError> {
        match self.value(name) {
            None => Ok(default),
            Some(ParamValue::Value(v)) if v.trim().eq_ignore_ascii_case("true") => Ok(true),
            Some(ParamValue::Value(v)) if v.trim().eq_ignore_ascii_case("false") => Ok(false),
            Some(other) => Err(invalid(format!(
                "{name} must be TRUE or FALSE, not {other:?}"
            ))),
        }
    }

    fn string(&self, name: &str) -> Result<Option<&str>, CimError> {
        match self.value(name) {
            None => Ok(None),
            Some(ParamValue::Value(v)) => Ok(Some(v.as_str())),
            Some(other) => Err(invalid(format!("{name} must be a string, not {other:?}"))),
        }
    }

    /// A class name parameter, checked against the repository.
    fn class<'r>(&self, repo: &'r Repository, name: &str) -> Result<Option<&'r str>, CimError> {
        let class = match self.value(name) {
            None => return Ok(None),
            Some(ParamValue::ClassName(c)) => c,
            Some(ParamValue::Value(c)) => c,
            Some(other) => {
                return Err(invalid(format!(
                    "{name} must be a class name, not {other:?}"
                )))
            }
        };
        repo.class(class)
            .map(|c| Some(c.name.as_str()))
            .ok_or_else(|| CimError::new(CimStatus::InvalidClass, format!("no class {class}")))
    }

    fn required_class<'r>(&self, repo: &'r Repository, name: &str) -> Result<&'r str, CimError> {
        self.class(repo, name)?
            .ok_or_else(|| invalid(format!("{} needs {name}", self.0.name)))
    }

    fn instance_name(&self, repo: &Repository, name: &str) -> Result<&InstanceName, CimError> {
        match self.value(name) {
            Some(ParamValue::InstanceName(n)) => {
                if repo.class(&n.class).is_none() {
                    return Err(CimError::new(
                        CimStatus::InvalidClass,
                        format!("no class {}", n.class),
                    ));
                }
                Ok(n)
            }
            Some(ParamValue::ClassName(_) | ParamValue::ClassReference(_)) => Err(CimError::new(
                CimStatus::NotSupported,
                format!(
                    "{} on a class is not supported: name an instance",
                    self.0.name
                ),
            )),
            _ => Err(invalid(format!(
                "{} needs {name} (an instance name)",
                self.0.name
            ))),
        }
    }

    fn property_list(&self) -> Result<Option<Vec<String>>, CimError> {
        match self.value("PropertyList") {
            None => Ok(None),
            Some(ParamValue::Array(items)) => Ok(Some(items.iter().flatten().cloned().collect())),
            Some(other) => Err(invalid(format!(
                "PropertyList must be an array, not {other:?}"
            ))),
        }
    }
}

/// Runs intrinsic operation `call`; the encoded objects of its answer.
pub(super) async fn run(
    state: &Arc<State>,
    repo: &Repository,
    call: &Call,
) -> Result<String, CimError> {
    let a = Args(call);
    let ns = NAMESPACE;
    let join = |items: Vec<String>| items.concat();
    match call.name.as_str() {
        "GetClass" => {
            a.only(&["ClassName", "LocalOnly", "IncludeQualifiers", "IncludeClassOrigin", "PropertyList"])?;
            let name = a.required_class(repo, "ClassName")?;
            let list = a.property_list()?;
            let shape = Shape {
                local_only: a.boolean("LocalOnly", true)?,
                include_qualifiers: a.boolean("IncludeQualifiers", true)?,
                include_class_origin: a.boolean("IncludeClassOrigin", false)?,
                property_list: list.as_deref(),
            };
            let class = repo.class(name).ok_or_else(|| CimError::new(CimStatus::InvalidClass, name))?;
            Ok(enc::class(repo, class, &shape))
        }
        "EnumerateClasses" | "EnumerateClassNames" => {
            let names_only = call.name == "EnumerateClassNames";
            if names_only {
                a.only(&["ClassName", "DeepInheritance"])?;
            } else {
                a.only(&["ClassName", "DeepInheritance", "LocalOnly", "IncludeQualifiers", "IncludeClassOrigin"])?;
            }
            let parent = a.class(repo, "ClassName")?;
            let classes = repo.subclasses(parent, a.boolean("DeepInheritance", false)?);
            if names_only {
                return Ok(join(classes.iter().map(|c| enc::class_name(&c.name)).collect()));
            }
            let shape = Shape {
                local_only: a.boolean("LocalOnly", true)?,
                include_qualifiers: a.boolean("IncludeQualifiers", true)?,
                include_class_origin: a.boolean("IncludeClassOrigin", false)?,
                property_list: None,
            };
            Ok(join(classes.iter().map(|c| enc::class(repo, c, &shape)).collect()))
        }
        "GetInstance" => {
            a.only(&["InstanceName", "LocalOnly", "IncludeQualifiers", "IncludeClassOrigin", "PropertyList"])?;
            let name = a.instance_name(repo, "InstanceName")?;
            let list = a.property_list()?;
            let shape = instance_shape(&a, list.as_deref())?;
            let mut snapshot = Snapshot::read(state).await.map_err(|e| cim_error(&e))?;
            snapshot.read_items(state, repo, Some(&name.class), vm_id_of(repo, name)).await;
            let found = snapshot.find(repo, name).ok_or_else(|| not_found(name))?;
            Ok(enc::instance(repo, &found, ns, &shape))
        }
        "EnumerateInstances" | "EnumerateInstanceNames" => {
            let names_only = call.name == "EnumerateInstanceNames";
            if names_only {
                a.only(&["ClassName"])?;
            } else {
                a.only(&["ClassName", "LocalOnly", "DeepInheritance", "IncludeQualifiers", "IncludeClassOrigin", "PropertyList"])?;
            }
            let class = a.required_class(repo, "ClassName")?;
            let mut snapshot = Snapshot::read(state).await.map_err(|e| cim_error(&e))?;
            if !names_only {
                snapshot.read_items(state, repo, Some(class), None).await;
            }
            let found = snapshot.instances_of(repo, class);
            if names_only {
                return Ok(join(found.iter().map(|i| enc::instance_name(&i.path(repo), ns)).collect()));
            }
            let mut list = a.property_list()?;
            if !a.boolean("DeepInheritance", true)? {
                // Only the properties of the class asked for (DSP0200).
                let own: Vec<String> = repo.properties(class).iter().map(|p| p.name.clone()).collect();
                list = Some(match list {
                    Some(l) => l.into_iter().filter(|p| own.iter().any(|o| o.eq_ignore_ascii_case(p))).collect(),
                    None => own,
                });
            }
            let shape = instance_shape(&a, list.as_deref())?;
            Ok(join(found.iter().map(|i| enc::named_instance(repo, i, ns, &shape)).collect()))
        }
        "Associators" | "AssociatorNames" | "References" | "ReferenceNames" => {
            associations(state, repo, &a).await
        }
        "ExecQuery" => {
            a.only(&["QueryLanguage", "Query"])?;
            let language = a.string("QueryLanguage")?.unwrap_or_default();
            if !language.eq_ignore_ascii_case("WQL") {
                return Err(CimError::new(
                    CimStatus::QueryLanguageNotSupported,
                    format!("query language {language:?}: only WQL is supported"),
                ));
            }
            let text = a.string("Query")?.ok_or_else(|| invalid("ExecQuery needs Query".into()))?;
            let bad = |e: wql::WqlError| CimError::new(CimStatus::InvalidQuery, e.to_string());
            let query = wql::parse(text).map_err(bad)?;
            let class = repo
                .class(&query.class)
                .ok_or_else(|| CimError::new(CimStatus::InvalidClass, format!("no class {}", query.class)))?;
            let props = repo.properties(&class.name);
            let type_of = |p: &str| {
                props
                    .iter()
                    .find(|q| q.name.eq_ignore_ascii_case(p))
                    .map(|q| q.cim_type.clone())
            };
            query.check(&type_of).map_err(bad)?;
            let mut snapshot = Snapshot::read(state).await.map_err(|e| cim_error(&e))?;
            snapshot.read_items(state, repo, Some(&class.name), None).await;
            let shape = Shape {
                property_list: query.properties.as_deref(),
                ..Shape::default()
            };
            Ok(join(
                snapshot
                    .instances_of(repo, &class.name)
                    .iter()
                    .filter(|i| query.matches(&|p| Some(i.get(p).cloned().unwrap_or(CimValue::Null))))
                    .map(|i| enc::object_with_path(repo, i, ns, &shape))
                    .collect(),
            ))
        }
        other => Err(CimError::new(
            CimStatus::NotSupported,
            format!("operation {other} is not supported (guestcomm serves the read operations, associations, ExecQuery and methods)"),
        )),
    }
}

fn instance_shape<'l>(a: &Args, list: Option<&'l [String]>) -> Result<Shape<'l>, CimError> {
    Ok(Shape {
        include_class_origin: a.boolean("IncludeClassOrigin", false)?,
        property_list: list,
        ..Shape::default()
    })
}

fn not_found(name: &InstanceName) -> CimError {
    let keys: Vec<String> = name
        .keys
        .iter()
        .map(|(k, v)| format!("{k}={}", v.text().unwrap_or_else(|| "(reference)".into())))
        .collect();
    CimError::new(
        CimStatus::NotFound,
        format!("no instance {}.{}", name.class, keys.join(",")),
    )
}

/// The filters of Associators and References (AssocClass and ResultRole
/// only for Associators).
#[derive(Clone, Copy)]
struct Filters<'a> {
    assoc_class: Option<&'a str>,
    result_class: Option<&'a str>,
    role: Option<&'a str>,
    result_role: Option<&'a str>,
}

/// Whether role `actual` is the one asked for (any, when none is).
fn same_role(want: Option<&str>, actual: &str) -> bool {
    want.is_none_or(|w| w.eq_ignore_ascii_case(actual))
}

/// Associators, AssociatorNames, References, ReferenceNames of an instance
/// or of a class ([`class_associations`]).
async fn associations(
    state: &Arc<State>,
    repo: &Repository,
    a: &Args<'_>,
) -> Result<String, CimError> {
    let name = a.0.name.as_str();
    let to_objects = name.starts_with("Associator");
    let names_only = name.ends_with("Names");
    let mut known = vec!["ObjectName", "ResultClass", "Role"];
    if to_objects {
        known.extend(["AssocClass", "ResultRole"]);
    }
    if !names_only {
        known.extend(["IncludeQualifiers", "IncludeClassOrigin", "PropertyList"]);
    }
    a.only(&known)?;
    let assoc_class = if to_objects {
        a.class(repo, "AssocClass")?
    } else {
        None
    };
    let result_class = a.class(repo, "ResultClass")?;
    let role = a.string("Role")?;
    let result_role = if to_objects {
        a.string("ResultRole")?
    } else {
        None
    };
    let filters = Filters {
        assoc_class,
        result_class,
        role,
        result_role,
    };
    if let Some(ParamValue::ClassName(class) | ParamValue::ClassReference(class)) =
        a.value("ObjectName")
    {
        return class_associations(repo, a, class, &filters);
    }
    let source = a.instance_name(repo, "ObjectName")?;
    let list = a.property_list()?;
    let shape = instance_shape(a, list.as_deref())?;
    let mut snapshot = Snapshot::read(state).await.map_err(|e| cim_error(&e))?;
    if to_objects && !names_only {
        snapshot
            .read_items(state, repo, result_class, vm_id_of(repo, source))
            .await;
    }
    if snapshot.find(repo, source).is_none() {
        return Err(not_found(source));
    }
    let Filters {
        assoc_class,
        result_class,
        role,
        result_role,
    } = filters;
    let (links, ends) = snapshot.links_of(repo, source);
    let mut out: Vec<Instance> = Vec::new();
    for link in links {
        // The reference to the source, and the other end.
        let refs: Vec<(&String, &InstanceName)> = link
            .properties
            .iter()
            .filter_map(|(k, v)| match v {
                CimValue::Reference(n) => Some((k, n)),
                _ => None,
            })
            .collect();
        let Some((from_role, _)) = refs.iter().find(|(_, n)| n.same(source)) else {
            continue;
        };
        if !same_role(role, from_role) {
            continue;
        }
        if !to_objects {
            if result_class.is_none_or(|c| repo.is_a(&link.class, c)) {
                out.push(link.clone());
            }
            continue;
        }
        if assoc_class.is_some_and(|c| !repo.is_a(&link.class, c)) {
            continue;
        }
        for (to_role, other) in refs.iter().filter(|(r, _)| r != from_role) {
            if !same_role(result_role, to_role)
                || result_class.is_some_and(|c| !repo.is_a(&other.class, c))
            {
                continue;
            }
            if let Some(found) = ends.iter().find(|e| e.path(repo).same(other)) {
                out.push(found.clone());
            }
        }
    }
    let ns = NAMESPACE;
    Ok(one_per_service(repo, out)
        .iter()
        .map(|i| {
            if names_only {
                enc::object_path(&i.path(repo), ns)
            } else {
                enc::object_with_path(repo, i, ns, &shape)
            }
        })
        .collect())
}

/// Associators, AssociatorNames, References, ReferenceNames of a class
/// (DSP0200): from the class repository, the classes at the other end of
/// each association class that names the class (or one of its
/// superclasses), or those association classes. A ResultClass derived
/// from the class an association names is itself the answer: it is what
/// may be at that end.
fn class_associations(
    repo: &Repository,
    a: &Args<'_>,
    class: &str,
    filters: &Filters<'_>,
) -> Result<String, CimError> {
    let source = repo
        .class(class)
        .ok_or_else(|| CimError::new(CimStatus::InvalidClass, format!("no class {class}")))?;
    let name = a.0.name.as_str();
    let to_objects = name.starts_with("Associator");
    let names_only = name.ends_with("Names");
    let Filters {
        assoc_class,
        result_class,
        role,
        result_role,
    } = *filters;
    let mut found: Vec<&str> = Vec::new();
    for link in repo.class_links(&source.name) {
        if !same_role(role, link.role) {
            continue;
        }
        let answer = if to_objects {
            if assoc_class.is_some_and(|c| !repo.is_a(&link.association.name, c))
                || !same_role(result_role, link.result_role)
            {
                continue;
            }
            match result_class {
                None => link.result_class,
                Some(c) if repo.is_a(link.result_class, c) => link.result_class,
                Some(c) if repo.is_a(c, link.result_class) => c,
                Some(_) => continue,
            }
        } else {
            if result_class.is_some_and(|c| !repo.is_a(&link.association.name, c)) {
                continue;
            }
            &link.association.name
        };
        if !found.iter().any(|f| f.eq_ignore_ascii_case(answer)) {
            found.push(answer);
        }
    }
    let list = a.property_list()?;
    let shape = Shape {
        include_qualifiers: a.boolean("IncludeQualifiers", false)?,
        include_class_origin: a.boolean("IncludeClassOrigin", false)?,
        property_list: list.as_deref(),
        ..Shape::default()
    };
    let ns = NAMESPACE;
    Ok(found
        .iter()
        .filter_map(|c| repo.class(c))
        .map(|c| {
            if names_only {
                enc::class_object_path(&c.name, ns)
            } else {
                enc::class_with_path(repo, c, ns, &shape)
            }
        })
        .collect())
}
